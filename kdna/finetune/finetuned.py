"""What :func:`kdna.finetune` returns: :class:`FinetuneResult`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from kdna.finetune.methods import FinetuneMethod
from kdna.finetune.protocol import ProtocolSplits
from kdna.finetune.runs import TrainedRun
from kdna.finetune.task import Task, save_task
from kdna.models.pretrained import PretrainedConfig
from kdna.train.evaluate import Metrics

__all__ = ["FinetuneResult"]


@dataclass
class FinetuneResult:
    """A fine-tuned network and how it was made. Accuracies are fractions in [0, 1]."""

    model: nn.Module  # the trained network in eval mode, ready for inference (LoRA merged)
    method: FinetuneMethod
    lr: float  # the peak learning rate it trained with
    lr_search: dict[float, float]  # with lr="search": validation top-1 at each rate tried
    history: list[dict[str, float]]  # one row per pass: train loss / top-1, val loss / top-1
    val: Metrics  # on the validation split (with its confusion matrix)
    test: Metrics | None  # on the test split; None where the data has none (see sources)
    classes: list[str]
    sources: dict[str, str]  # split -> where it came from, in words
    trainable: int  # parameters that trained
    total: int  # parameters of the trained network
    steps: int
    seconds: float  # wall time, data loading and evaluation included
    device: str
    image_size: int
    config: PretrainedConfig  # the pretrained network's normalisation, as used
    resize: str  # "whole" or "crop": how evaluation resized images (saved tasks repeat it)
    arch: str | None  # the registered arch it started from (None: a given module)
    base: str  # the pretrained network's class
    seed: int
    data: str | None  # the data set's name or folder (None: data sets given)
    splits: ProtocolSplits = field(repr=False)
    trained: TrainedRun = field(repr=False)

    @property
    def reported(self) -> Metrics:
        """The test metrics, or the validation metrics where there is no test split."""
        return self.test if self.test is not None else self.val

    def save(self, folder: str | os.PathLike) -> Path:
        """Write the task file into ``folder`` (:mod:`kdna.finetune.task`): only what
        fine-tuning changed, the classes and the input it expects; load it with
        :func:`kdna.finetune.load_task`. Returns the folder."""
        meta = {"method": self.method.name, "seed": self.seed, "classes": self.classes,
                "arch": self.arch, "weights": self.config.weights, "base_class": self.base,
                "image_size": self.image_size, "mean": list(self.config.mean),
                "std": list(self.config.std), "resize": self.resize, "lr": self.lr}
        return save_task(folder, self.trained.prepared.model, self.trained.initial, meta)

    def task(self) -> Task:
        """This network as a :class:`~kdna.finetune.task.Task` (predictions on image files)."""
        meta = {"image_size": self.image_size, "mean": list(self.config.mean),
                "std": list(self.config.std), "resize": self.resize}
        return Task(self.model, self.classes, meta)

    def predict(self, images: Sequence[Any], topk: int = 5) -> list[list[tuple[str, float]]]:
        """For each image (a path or a PIL image), its ``topk`` classes and probabilities."""
        return self.task().predict(images, topk)

    def summary(self) -> dict[str, Any]:
        """The numbers a report needs, as plain values (``metrics.json``)."""
        reported = self.reported
        return {
            "method": self.method.name, "label": self.method.label, "lr": self.lr,
            "lr_search": {f"{lr:g}": v for lr, v in self.lr_search.items()},
            "steps": self.steps, "image_size": self.image_size, "device": self.device,
            "seconds": round(self.seconds, 1), "trainable": self.trainable,
            "total": self.total, "arch": self.arch, "base": self.base, "data": self.data,
            "classes": self.classes, "sources": self.sources, "val_top1": self.val.top1,
            "test_top1": None if self.test is None else self.test.top1,
            "per_class_split": "test" if self.test is not None else "val",
            "per_class_top1": dict(zip(self.classes, reported.per_class(), strict=True)),
            "normalisation": {"mean": list(self.config.mean), "std": list(self.config.std),
                              "source": self.config.source}}

    def __str__(self) -> str:
        test = (f"test top-1 {100 * self.test.top1:.1f}%" if self.test is not None
                else f"no test split ({self.sources.get('test', 'none')})")
        return (f"{self.method.label} on {self.data or 'the given data sets'}: "
                f"validation top-1 {100 * self.val.top1:.1f}%, {test}; lr {self.lr:g}, "
                f"{self.steps} steps, {self.trainable:,} of {self.total:,} parameters "
                f"trained, {self.seconds:.0f} s on {self.device}")
