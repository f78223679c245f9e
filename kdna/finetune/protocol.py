"""One fine-tuning protocol for every method: the same data, steps, schedule and batch.

A :class:`Protocol` fixes everything but the method and its learning rate: the data and
image size, a train / validation / test split (:func:`protocol_splits`, from
:func:`kdna.load_data`: a folder's or data set's own test split where it has one, and a
stratified share of its training split, fixed by ``split_seed``, as the validation split),
the number of optimizer steps, batch, AdamW and its warm-up and cosine schedule, the
augmentation, the BatchNorm statistics (frozen), the learning-rate grid and the seeds.

:func:`kdna.finetune` trains one method under a protocol; :func:`kdna.finetune.compare_methods`
trains many: each method (:mod:`kdna.finetune.methods`) at every learning rate of the grid
with the selection seed, its rate chosen on *validation* (:func:`kdna.finetune.results.
choose_lr`), the remaining seeds at that rate, every seed's model at the chosen rate evaluated
on the *test* split, which nothing else reads. Runs (:mod:`kdna.finetune.runs`) are cached as
JSON under the one cache root (:func:`kdna.data.cache.cache_root`), keyed by a hash of the
whole configuration (:func:`run_key`: protocol (a folder by its content, not its path), method
and its settings, rate, seed, device type, kdna version), so a comparison with a wider grid or
more seeds reuses the runs it shares with an earlier one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from kdna._checks import checked_replace, int_at_least, one_of, optional_positive_int, positive_int
from kdna.data import load_data, source_key
from kdna.data.splits import SplitView
from kdna.finetune.methods import FinetuneMethod, get_method
from kdna.finetune.results import SELECTION_SEED
from kdna.models import create_model, pretrained_config

__all__ = ["Protocol", "ProtocolSplits", "check_schedule", "example_batch", "pretrained_network",
           "protocol_splits", "run_key", "training_images"]


def check_schedule(protocol: Any) -> None:
    """Check the fields the fine-tuning and the from-scratch protocols share, from their
    ``__post_init__``: ``val_fraction`` in (0, 1), ``warmup`` in [0, 1), a grid of distinct
    positive learning rates and distinct integer seeds whose first is the selection seed (the
    one that chooses the rate); then store ``lrs`` as floats and ``seeds`` as a tuple."""
    if not 0 < protocol.val_fraction < 1:
        raise ValueError(f"val_fraction must lie strictly between 0 and 1, got "
                         f"{protocol.val_fraction!r}")
    if not 0 <= protocol.warmup < 1:
        raise ValueError(f"warmup must be a fraction of the steps in [0, 1), got "
                         f"{protocol.warmup!r}")
    lrs, seeds = tuple(protocol.lrs), tuple(protocol.seeds)
    if not lrs or any(isinstance(v, bool) or not isinstance(v, int | float) or not v > 0
                      for v in lrs) or len(set(lrs)) != len(lrs):
        raise ValueError(f"lrs must be distinct positive learning rates, got {protocol.lrs!r}")
    if (not seeds or any(isinstance(s, bool) or not isinstance(s, int) for s in seeds)
            or seeds[0] != SELECTION_SEED or len(set(seeds)) != len(seeds)):
        raise ValueError(f"seeds must be distinct integers starting with the selection seed "
                         f"{SELECTION_SEED}, got {protocol.seeds!r}")
    object.__setattr__(protocol, "lrs", tuple(float(v) for v in lrs))  # a frozen dataclass
    object.__setattr__(protocol, "seeds", seeds)


@dataclass(frozen=True)
class Protocol:
    """Everything a comparison holds fixed (every value checked when it is made)."""

    data: str = "mnist"  # a load_data name ("mnist", "digits", ...) or a folder's path
    arch: str = "efficientnet_lite0"  # the pretrained network, by its registered name
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
    # "frozen": every BatchNorm's statistics stay fixed while training (kdna.nn.
    # freeze_batchnorm): batches are normalised with the pretrained running statistics, which
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
        check_schedule(self)

    def with_overrides(self, **overrides: Any) -> Protocol:
        """A copy with the given fields changed (``TypeError`` naming an unknown field)."""
        return checked_replace(self, "protocol", overrides)



def run_key(protocol: Protocol, method: str | FinetuneMethod, lr: float, seed: int,
            device: torch.device | str = "cpu") -> str:
    """A hash of the whole configuration of one run: every protocol field but the grid and
    the seeds of the comparison (``lrs``, ``seeds``: a run has one rate and one seed, both
    hashed), the method and its settings, the device type and kdna's version. It changes
    whenever anything that could change the run's result does."""
    import kdna  # the package's version (at call time: kdna/__init__ imports this layer)

    method = get_method(method)
    fields = {k: v for k, v in dataclasses.asdict(protocol).items() if k not in ("lrs", "seeds")}
    fields["data"] = source_key(protocol.data)  # a folder by its content, not its path
    config = {"protocol": fields, "method": method.name,
              "settings": dict(method.settings), "lr": float(lr), "seed": int(seed),
              "device": torch.device(device).type, "kdna": kdna.__version__}
    text = json.dumps(config, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass
class ProtocolSplits:
    """The three splits a fine-tuning run reads, and where each came from."""

    train: Dataset  # augmented (if the protocol augments)
    val: Dataset  # chooses the learning rate; eval transforms
    test: Dataset | None  # reported, read by nothing else; None where the data has none
    classes: list[str]
    name: str
    sources: dict[str, str] = field(default_factory=dict)  # split -> where it came from

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def protocol_splits(protocol: Protocol, *, mean: tuple[float, ...] | None = None,
                    std: tuple[float, ...] | None = None) -> ProtocolSplits:
    """Train, validation and test splits of ``protocol.data`` (:func:`kdna.load_data`),
    normalised as ``protocol.arch``'s pretrained weights expect (or with ``mean``/``std``)."""
    config = pretrained_config(protocol.arch, mean=mean, std=std)
    data = load_data(protocol.data, image_size=protocol.image_size, mean=config.mean,
                     std=config.std, val_fraction=protocol.val_fraction,
                     seed=protocol.split_seed, augment=protocol.augment, limit=protocol.limit)
    return ProtocolSplits(data.train, data.val, data.test, list(data.classes), data.name,
                          dict(data.sources))


def pretrained_network(protocol: Protocol) -> nn.Module:
    """The protocol's pretrained network with its original head (every method's start)."""
    config = pretrained_config(protocol.arch)
    if config.weights is None:
        raise ValueError(f"{protocol.arch!r} has no pretrained weights to fine-tune from")
    return create_model(protocol.arch, kernel_dna=False, weights=config.weights)


def example_batch(splits: ProtocolSplits, size: int = 32) -> torch.Tensor:
    """The first ``size`` validation images as a batch (the conversions' ``example_inputs``)."""
    return torch.stack([splits.val[i][0] for i in range(min(size, len(splits.val)))])


def training_images(splits: ProtocolSplits, count: int, seed: int = 0) -> torch.Tensor:
    """``count`` training images without labels, and without augmentation where the
    training split is a view whose evaluation transform is known."""
    view = splits.train
    if isinstance(view, SplitView) and isinstance(splits.val, SplitView):
        view = SplitView(view.base, view.indices, splits.val.transform)
    order = torch.randperm(len(view), generator=torch.Generator().manual_seed(seed))
    return torch.stack([view[int(i)][0] for i in order[:count]])
