"""Fine-tune a pretrained network on a data set: :func:`finetune`, the kit's one path.

``kdna.finetune(arch_or_model, data)`` takes a registered arch name (its pretrained weights
and normalisation come from the registry) or any ``nn.Module`` (its normalisation from its
own configuration, timm's ``pretrained_cfg``, a torchvision weights enum, or ``mean=`` and
``std=``); data as a name (``"mnist"``, ``"flowers102"``, ...), a folder in any common layout
(:func:`kdna.load_data`), or data sets. It trains one method of the registry
(:mod:`kdna.finetune.methods`; by default the best KernelDNA in-place method of the
committed benchmark) exactly as the benchmark's protocol trains every method
(:mod:`kdna.finetune.runs`), at the rate that protocol chose for it, a given rate, or one it
chooses from the grid on the validation split (``lr="search"``), and returns a
:class:`FinetuneResult`: the trained network ready for inference, what was done, the history,
validation and test metrics, and :meth:`FinetuneResult.save` for the task file.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from kdna._checks import module_arg, one_of, positive_int
from kdna.finetune.committed import committed, default_lr, default_method
from kdna.finetune.data import finetune_splits
from kdna.finetune.finetuned import FinetuneResult
from kdna.finetune.methods import FinetuneMethod, MethodContext, get_method, inference_form
from kdna.finetune.protocol import (
    Protocol,
    ProtocolSplits,
    example_batch,
    run_key,
    training_images,
)
from kdna.finetune.runs import TrainedRun, train_method
from kdna.models import canonical_name, create_model, pretrained_config
from kdna.models.pretrained import PretrainedConfig
from kdna.nn.utils import default_device, device_description
from kdna.train.evaluate import evaluate

__all__ = ["DEFAULT_BATCH", "finetune"]

DEFAULT_BATCH = 16  # the committed protocol's batch, which its learning rates were chosen for


def _pretrained(model: str | nn.Module, mean, std, weights) -> tuple[nn.Module, str | None,
                                                                     PretrainedConfig]:
    """The pretrained network every method starts from, its arch name, its configuration."""
    if isinstance(model, str):
        arch = canonical_name(model)
        config = pretrained_config(arch, mean=mean, std=std)
        if config.weights is None:
            raise ValueError(f"{arch!r} has no pretrained weights to fine-tune from; pass a "
                             f"pretrained nn.Module instead")
        return create_model(arch, kernel_dna=False, weights=config.weights), arch, config
    module_arg("model", model)
    return model, None, pretrained_config(model, weights=weights, mean=mean, std=std)


def _steps(steps: int | None, epochs: int | None, train: Dataset, batch: int) -> int:
    if steps is not None and epochs is not None:
        raise ValueError(f"give steps or epochs, not both (got steps={steps}, epochs={epochs})")
    if epochs is not None:
        return max(1, positive_int("epochs", epochs) * (len(train) // batch))
    return positive_int("steps", steps) if steps is not None else committed()["protocol"]["steps"]


def _grid(lr: float | str | None, method: FinetuneMethod, data_name: str,
          lrs: Sequence[float]) -> tuple[float, ...]:
    if lr is None:
        return (default_lr(method.name, data_name),)
    if isinstance(lr, str):
        one_of("lr", lr, ("search",))
        return tuple(float(v) for v in lrs)
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not lr > 0:
        raise ValueError(f"lr must be a positive number, 'search' or None, got {lr!r}")
    return (float(lr),)


@dataclass
class _Job:
    """One call of :func:`finetune`, resolved: what trains, from what, on what data."""

    method: FinetuneMethod
    base: nn.Module
    splits: ProtocolSplits
    data_name: str | None
    seed: int
    device: torch.device
    out: Path | None
    progress: bool
    protocol: Protocol | None = None
    context: MethodContext | None = None

    def train(self, lr: float, test: bool) -> TrainedRun:
        """One run at ``lr``; under ``out`` (when the data has a name or folder, which key
        its checkpoints) it resumes an interrupted run of the same configuration."""
        if self.context is None:
            splits, count = self.splits, self.protocol.recovery_images
            self.context = MethodContext(splits.num_classes, example_batch(splits),
                                         images=lambda: training_images(splits, count),
                                         progress=self.progress)
        folder = None
        if self.out is not None and self.data_name is not None:
            key = run_key(self.protocol, self.method, lr, self.seed, self.device)
            folder = self.out / "checkpoints" / key
        return train_method(self.method, self.protocol, self.splits, self.base, self.context,
                            lr, self.seed, test=test, device=self.device,
                            progress=self.progress, out_dir=folder, track_val=True,
                            confusion=True)

    def search(self) -> tuple[TrainedRun, dict[float, float]]:
        """The run at the best rate of the protocol's grid on validation (the smaller rate
        on a tie, as :func:`kdna.finetune.results.choose_lr`), with its test metrics, and
        each rate's validation top-1 (empty for a single rate). Test is read for the chosen
        run only."""
        grid = self.protocol.lrs
        best, scores = None, {}
        with tqdm(total=len(grid), desc=f"fine-tuning ({self.method.label})",
                  disable=not self.progress or len(grid) == 1) as bar:
            for lr in grid:
                bar.set_postfix_str(f"lr={lr:g}")
                trained = self.train(lr, test=len(grid) == 1)
                scores[lr] = trained.val.top1
                if best is None or (trained.val.top1, -lr) > (best.val.top1, -best.run.lr):
                    best = trained
                bar.update()
        if best.test is None and self.splits.test is not None:
            best.test = evaluate(best.prepared.model, self.splits.test, device=self.device,
                                 progress=False, confusion=True)
            best.run.test_top1, best.run.test_loss = best.test.top1, best.test.loss
        return best, scores if len(grid) > 1 else {}


def finetune(model: str | nn.Module, data: str | os.PathLike | Sequence[Dataset], *,
             method: str | FinetuneMethod | None = None,
             lr: float | Literal["search"] | None = None, steps: int | None = None,
             epochs: int | None = None, batch_size: int = DEFAULT_BATCH,
             image_size: int | None = None, mean: Sequence[float] | None = None,
             std: Sequence[float] | None = None, weights=None,
             classes: Sequence[str] | None = None, val_fraction: float = 0.2,
             limit: int | None = None, seed: int = 0, batchnorm: str = "frozen",
             augment: bool = True, flip: bool | None = None,
             lrs: Sequence[float] = Protocol.lrs,
             device: torch.device | str | None = None, out: str | os.PathLike | None = None,
             progress: bool = True) -> FinetuneResult:
    """Fine-tune ``model`` on ``data`` with one method (see the module docstring).

    Args:
        model: a registered arch (:func:`kdna.list_models`) or a pretrained ``nn.Module``
            (never changed: every method starts from a copy).
        data: a data set name or folder (:func:`kdna.load_data`: ``<class>/...``, ``train/``
            + ``val/``, ``train/`` + ``test/``, or all three), or ``(train, val)`` /
            ``(train, val, test)`` data sets of ``(image tensor, label)`` items.
        method: a name in :data:`kdna.finetune.METHODS` (default:
            :func:`kdna.finetune.committed.default_method`).
        lr: the peak learning rate; ``None``: the committed protocol's choice for this
            method; ``"search"``: the best on the validation split among ``lrs``.
        steps, epochs: the budget in steps or passes (default: the committed protocol's).
        image_size, mean, std, weights: the input; by default from the network's pretrained
            configuration (:func:`kdna.models.pretrained_config`).
        classes: class names for data sets without a ``classes`` attribute.
        val_fraction, seed: the validation share carved out of train where there is no
            validation split, and the seed of that split and of the run.
        batchnorm: ``"frozen"`` (the running statistics never move) or ``"train"``.
        augment, flip: random training transforms; may they flip (:func:`kdna.load_data`).
        out: a folder for checkpoints; a run interrupted there resumes when called again.
    """
    start = time.perf_counter()
    one_of("batchnorm", batchnorm, ("frozen", "train"))
    positive_int("batch_size", batch_size)
    base, arch, config = _pretrained(model, mean, std, weights)
    size = image_size or config.input_size
    splits, data_name, resize = finetune_splits(data, size, config, val_fraction=val_fraction,
                                                seed=seed, limit=limit, augment=augment,
                                                flip=flip, classes=classes)
    job = _Job(get_method(method or default_method()), base, splits, data_name, seed,
               default_device(device), None if out is None else Path(out), progress)
    job.protocol = Protocol(
        data=data_name or "data sets", arch=arch or type(base).__name__, image_size=size,
        limit=limit, val_fraction=val_fraction, split_seed=seed,
        steps=_steps(steps, epochs, splits.train, batch_size), batch_size=batch_size,
        lrs=_grid(lr, job.method, data_name, lrs), seeds=(0,), batchnorm=batchnorm,
        augment=augment)
    trained, scores = job.search()
    return FinetuneResult(
        model=inference_form(trained.prepared.model).eval(), method=job.method,
        lr=trained.run.lr, lr_search=scores, history=trained.training.history, val=trained.val,
        test=trained.test, classes=list(splits.classes), sources=dict(splits.sources),
        trainable=trained.prepared.trainable_count, total=trained.prepared.total,
        steps=trained.run.steps, seconds=time.perf_counter() - start,
        device=device_description(job.device), image_size=size, config=config,
        resize=resize, arch=arch, base=type(base).__name__, seed=seed, data=data_name,
        splits=splits, trained=trained)
