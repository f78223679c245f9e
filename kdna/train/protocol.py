"""One fine-tuning protocol for every method: the same data, steps, schedule and batch.

A :class:`Protocol` fixes everything but the method and its learning rate: the data set and
image size, a train / validation / test split (:func:`protocol_splits`: the data set's own
held-out split is the test split, and a stratified share of its training split, fixed by
``split_seed``, is the validation split), the number of optimizer steps, batch, AdamW and its
warm-up and cosine schedule, the augmentation, the learning-rate grid and the seeds.

:func:`compare_methods` runs it: each method (:mod:`kdna.train.methods`) is trained at every
learning rate of the grid with the selection seed, its rate is chosen on *validation*
(:func:`kdna.train.comparison.choose_lr`), and the remaining seeds are trained at that rate;
every seed's model at the chosen rate is evaluated on the *test* split, which nothing else
reads. Each run is cached as JSON under the one cache root
(:func:`kdna.data.cache.cache_root`), keyed by a hash of the whole configuration
(:func:`run_key`: protocol, method and its settings, rate, seed, device type, kdna version),
so a comparison with a wider grid or more seeds reuses the runs it shares with an earlier one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from kdna._checks import checked_replace, int_at_least, one_of, optional_positive_int, positive_int
from kdna._extras import require
from kdna._files import write_atomically
from kdna.conversion.adapters import save_adapters
from kdna.data.cache import cache_root
from kdna.data.classification import IMAGENET_MEAN, IMAGENET_STD, load_data
from kdna.data.splits import SplitView, dataset_labels, stratified_split
from kdna.models import create_model
from kdna.models.efficientnet_lite import MEAN as LITE_MEAN
from kdna.models.efficientnet_lite import STD as LITE_STD
from kdna.train.comparison import SELECTION_SEED, RunResult
from kdna.train.config import TrainConfig
from kdna.train.evaluate import evaluate
from kdna.train.loop import fit
from kdna.train.methods import (
    FinetuneMethod,
    FrozenStatistics,
    MethodContext,
    Prepared,
    get_method,
    prepare,
)

__all__ = ["Protocol", "ProtocolSplits", "cached_run", "default_cache", "example_batch",
           "pretrained_network", "protocol_splits", "run_key", "store_run", "task_bytes",
           "train_run", "training_images"]


@dataclass(frozen=True)
class Protocol:
    """Everything a comparison holds fixed (every value checked when it is made)."""

    data: str = "mnist"  # a load_data name: "mnist", "digits", "faces", ...
    arch: str = "efficientnet_lite0"  # the pretrained network (offline ImageNet weights)
    image_size: int = 32
    limit: int | None = None  # at most this many samples per load_data split
    val_fraction: float = 0.2  # of the training split, held out to choose the learning rate
    split_seed: int = 0  # fixes the validation split (the same for every seed)
    steps: int = 120  # optimizer steps per run (whole passes over a seeded draw of the data)
    batch_size: int = 16
    lrs: tuple[float, ...] = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2)  # the one grid for every method
    seeds: tuple[int, ...] = (0, 1, 2)  # the first chooses the learning rate
    warmup: float = 0.1  # linear warm-up, a fraction of the steps; then cosine to zero
    weight_decay: float = 0.0  # AdamW's
    # "frozen": every BatchNorm stays in eval mode while training (kdna.train.methods.
    # FrozenStatistics): batches are normalised with the pretrained running statistics, which
    # never move, and methods that train norms train their scale and shift (which can absorb
    # any per-channel re-normalisation). Small batches at the last stages' 1x1 or 2x2
    # resolution make batch statistics noise. "train": batch statistics while training,
    # running averages updated with bn_momentum (the linear probe stays frozen either way).
    batchnorm: str = "frozen"
    bn_momentum: float | None = 0.1  # with batchnorm="train" (EfficientNet-Lite0 ships 0.01)
    augment: bool = True  # load_data's training augmentation
    recovery_images: int = 512  # unlabeled training images kdna_shared distils on

    def __post_init__(self) -> None:
        int_at_least("image_size", self.image_size, 8)
        one_of("batchnorm", self.batchnorm, ("frozen", "train"))
        optional_positive_int("limit", self.limit)
        for name in ("steps", "batch_size", "recovery_images"):
            positive_int(name, getattr(self, name))
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must lie strictly between 0 and 1, got "
                             f"{self.val_fraction!r}")
        if not 0 <= self.warmup < 1:
            raise ValueError(f"warmup must be a fraction of the steps in [0, 1), got "
                             f"{self.warmup!r}")
        lrs, seeds = tuple(self.lrs), tuple(self.seeds)
        if not lrs or any(isinstance(v, bool) or not isinstance(v, int | float) or not v > 0
                          for v in lrs) or len(set(lrs)) != len(lrs):
            raise ValueError(f"lrs must be distinct positive learning rates, got {self.lrs!r}")
        if (not seeds or any(isinstance(s, bool) or not isinstance(s, int) for s in seeds)
                or seeds[0] != SELECTION_SEED or len(set(seeds)) != len(seeds)):
            raise ValueError(f"seeds must be distinct integers starting with the selection "
                             f"seed {SELECTION_SEED}, got {self.seeds!r}")
        object.__setattr__(self, "lrs", tuple(float(v) for v in lrs))
        object.__setattr__(self, "seeds", seeds)

    def with_overrides(self, **overrides: Any) -> Protocol:
        """A copy with the given fields changed (``TypeError`` naming an unknown field)."""
        return checked_replace(self, "protocol", overrides)

    def normalisation(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The mean and std the pretrained network was trained with."""
        if self.arch == "efficientnet_lite0":
            return LITE_MEAN, LITE_STD
        return IMAGENET_MEAN, IMAGENET_STD


def run_key(protocol: Protocol, method: str | FinetuneMethod, lr: float, seed: int,
            device: torch.device | str = "cpu") -> str:
    """A hash of the whole configuration of one run: every protocol field but the grid and
    the seeds of the comparison (``lrs``, ``seeds``: a run has one rate and one seed, both
    hashed), the method and its settings, the device type and kdna's version. It changes
    whenever anything that could change the run's result does."""
    import kdna  # the package's version (at call time: kdna/__init__ imports this layer)

    method = get_method(method)
    fields = {k: v for k, v in dataclasses.asdict(protocol).items() if k not in ("lrs", "seeds")}
    config = {"protocol": fields, "method": method.name,
              "settings": dict(method.settings), "lr": float(lr), "seed": int(seed),
              "device": torch.device(device).type, "kdna": kdna.__version__}
    text = json.dumps(config, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass
class ProtocolSplits:
    """The three splits of a protocol, and the labels of the training split."""

    train: Dataset  # augmented (if the protocol augments)
    val: Dataset  # a stratified share of the data set's training split, eval transforms
    test: Dataset  # the data set's own held-out split, eval transforms
    train_labels: torch.Tensor
    classes: list[str]
    name: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def protocol_splits(protocol: Protocol) -> ProtocolSplits:
    """Train, validation and test splits of ``protocol.data`` (see the module docstring)."""
    mean, std = protocol.normalisation()
    data = load_data(protocol.data, image_size=protocol.image_size, mean=mean, std=std,
                     seed=protocol.split_seed, augment=protocol.augment, limit=protocol.limit)
    view = data.train
    if not isinstance(view, SplitView):
        raise ValueError(f"load_data({protocol.data!r}) gave no split view to hold a "
                         f"validation share out of")
    labels = dataset_labels(view.base)[view.indices]
    fit_idx, val_idx = stratified_split(labels, protocol.val_fraction, protocol.split_seed)
    return ProtocolSplits(
        train=SplitView(view.base, view.indices[fit_idx], view.transform),
        val=SplitView(view.base, view.indices[val_idx], data.val.transform),
        test=data.val, train_labels=labels[fit_idx], classes=data.classes, name=data.name)


def pretrained_network(protocol: Protocol) -> nn.Module:
    """The protocol's pretrained network with its original head (every method's start)."""
    weights = "imagenet" if protocol.arch == "efficientnet_lite0" else "DEFAULT"
    return create_model(protocol.arch, kernel_dna=False, weights=weights)


def _draw(splits: ProtocolSplits, protocol: Protocol, seed: int) -> tuple[Dataset, int]:
    """The run's training data (a seeded draw of whole batches) and its number of passes,
    so that ``passes * len(draw) / batch_size == protocol.steps`` where the data allows."""
    n, batch = len(splits.train), protocol.batch_size
    passes = max(1, math.ceil(protocol.steps * batch / n))
    per_pass = max(1, min(protocol.steps // passes, n // batch))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return Subset(splits.train, order[: per_pass * batch].tolist()), passes


def train_run(method: str | FinetuneMethod, protocol: Protocol, splits: ProtocolSplits,
              pretrained: nn.Module, context: MethodContext, lr: float, seed: int, *,
              test: bool = True, device: torch.device | str | None = None,
              progress: bool = False) -> tuple[RunResult, Prepared]:
    """Prepare ``method`` from ``pretrained`` and train it once under ``protocol`` at ``lr``
    with ``seed``; evaluate on validation and, if ``test``, on test."""
    method = get_method(method)
    one_of("lr", float(lr), protocol.lrs)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    context.seed = seed
    prepared = prepare(method, pretrained, context)
    model = prepared.model
    if protocol.batchnorm == "frozen" and not isinstance(model, FrozenStatistics):
        model = FrozenStatistics(model)  # shares every tensor with prepared.model
    data, passes = _draw(splits, protocol, seed)
    before = {k: v.detach().clone() for k, v in prepared.model.state_dict().items()
              if isinstance(v, torch.Tensor)}
    with tempfile.TemporaryDirectory() as folder:
        config = TrainConfig(epochs=passes, batch_size=protocol.batch_size, optimizer="adamw",
                             lr=float(lr), weight_decay=protocol.weight_decay,
                             warmup_epochs=protocol.warmup * passes, seed=seed, out_dir=folder,
                             tensorboard=False, progress=progress, workers=0,
                             bn_momentum=protocol.bn_momentum)
        result = fit(model, data, None, config, device=device)
        size = task_bytes(prepared.model, before, method.kernel_dna, Path(folder))
    val = evaluate(prepared.model, splits.val, device=device, progress=False)
    tested = evaluate(prepared.model, splits.test, device=device, progress=False) if test else None
    run = RunResult(method.name, float(lr), seed, val.top1,
                    None if tested is None else tested.top1,
                    None if tested is None else tested.loss, prepared.trainable_count,
                    prepared.total, result.steps, result.seconds_per_step, size)
    return run, prepared


def cached_run(key: str, train: Callable[[], RunResult], cache: Path | None
               ) -> tuple[RunResult, bool]:
    """The run cached under ``cache/<key>.json`` (and ``True``), or ``train()`` stored there
    (and ``False``); without a cache folder, always ``train()``."""
    path = None if cache is None else cache / f"{key}.json"
    if path is not None and path.exists():
        return RunResult.from_dict(json.loads(path.read_text())), True
    run = train()
    store_run(key, run, cache)
    return run, False


def store_run(key: str, run: RunResult, cache: Path | None) -> None:
    """Write ``run`` as ``cache/<key>.json`` (replacing what was there); nothing without a
    cache folder."""
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        text = json.dumps(dataclasses.asdict(run), indent=1).encode()
        write_atomically(cache / f"{key}.json", lambda file: file.write(text))


def default_cache() -> Path:
    """Where runs are cached: ``<cache root>/finetune``."""
    return cache_root("finetune")


def example_batch(splits: ProtocolSplits, size: int = 32) -> torch.Tensor:
    """The first ``size`` validation images as a batch (the conversions' probe)."""
    return torch.stack([splits.val[i][0] for i in range(min(size, len(splits.val)))])


def training_images(splits: ProtocolSplits, count: int, seed: int = 0) -> torch.Tensor:
    """``count`` training images without augmentation and without labels."""
    view = splits.train
    plain = SplitView(view.base, view.indices, splits.test.transform)
    order = torch.randperm(len(plain), generator=torch.Generator().manual_seed(seed))
    return torch.stack([plain[int(i)][0] for i in order[:count]])


def task_bytes(model: nn.Module, before: dict[str, torch.Tensor], kernel_dna: bool,
               folder: Path) -> int:
    """Bytes a task stores beside the pretrained network: a KernelDNA model's
    :func:`kdna.save_adapters` folder, otherwise a safetensors file of every tensor that
    differs from ``before`` (the state right after preparing: the base and its new head)."""
    if kernel_dna:
        saved = save_adapters(model, folder / "adapters")
        return sum(p.stat().st_size for p in saved.iterdir())
    safetensors = require("safetensors.torch", None, "the task file size")
    changed = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()
               if isinstance(v, torch.Tensor)
               and (k not in before or not torch.equal(v.detach().cpu(), before[k].cpu()))}
    return len(safetensors.save(changed))

