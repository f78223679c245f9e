"""One from-scratch protocol for every network: the same data, steps, schedule and batch.

A :class:`ScratchProtocol` fixes everything but the network and its learning rate: the data,
image size and how many training images (a class-balanced prefix of the training split, so
that a task MNIST would saturate stays hard), a train / validation / test split (from
:func:`kdna.load_data`; the data set's own test split where it has one, else a stratified
share; validation carved out of the training split, fixed by ``split_seed``), the width
multiplier every ResNet gets, the number of optimizer steps, the batch, SGD with momentum
and its warm-up and cosine schedule, weight decay on every parameter (the paper's recipe,
the same rule for every network), the augmentation, the learning-rate grid and the seeds.

It reuses the fine-tuning protocol's machinery: :class:`kdna.finetune.protocol.ProtocolSplits`,
:func:`kdna.finetune.runs.draw` (exactly ``steps`` steps of whole batches), the run cache
(:func:`kdna.finetune.runs.cached_run`), :class:`kdna.finetune.results.RunResult` and the
choice of the rate on validation (:func:`kdna.finetune.results.choose_lr`). A run is keyed by
:func:`scratch_key`, a hash of its whole configuration.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import torch

from kdna._checks import checked_replace, int_at_least, one_of, optional_positive_int, positive_int
from kdna.data import load_data, source_key
from kdna.data.splits import SplitView
from kdna.finetune.protocol import ProtocolSplits, check_schedule
from kdna.nn.utils import default_device
from kdna.scratch.networks import base_width, get_network, list_networks

__all__ = ["CPU_PROTOCOL", "GPU_PROTOCOL", "MEAN", "STD", "ScratchProtocol",
           "committed_protocol", "scratch_key", "scratch_splits"]

# The normalisation of every run: fixed, not fitted to the data (each network's first
# BatchNorm follows its stem, so only the scale of the inputs' spread matters).
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


@dataclass(frozen=True)
class ScratchProtocol:
    """Everything a from-scratch comparison holds fixed (every value checked when made)."""

    # The defaults are the committed CPU protocol (benchmarks/scratch.py; GPU_PROTOCOL for a GPU)
    data: str = "mnist"  # a load_data name ("mnist", "cifar100", ...) or a folder's path
    image_size: int = 16
    train_images: int | None = 100  # a class-balanced prefix of the training split; None: all
    val_fraction: float = 0.2  # of the training split, held out to choose the learning rate
    split_seed: int = 0  # fixes the test (offline sets) and validation splits for every seed
    width: float = 0.25  # every ResNet's widths: round(64 * width) times 1, 2, 4, 8
    steps: int = 200  # optimizer steps per run (whole passes over a seeded draw of the data)
    batch_size: int = 20
    optimizer: str = "sgd"  # "sgd" (momentum, the paper's) or "adamw"
    momentum: float = 0.9
    weight_decay: float = 5e-4  # on every parameter, as the paper's recipe
    warmup: float = 0.1  # linear warm-up, a fraction of the steps; then cosine to zero
    lrs: tuple[float, ...] = (0.003, 0.01, 0.03, 0.1, 0.3)  # the one grid for every network
    seeds: tuple[int, ...] = (0, 1, 2)  # the first chooses the learning rate
    augment: bool = True  # load_data's training augmentation (small shifts, turns, zooms)
    # The networks compared, in table order: every one of the registry.
    networks: tuple[str, ...] = tuple(list_networks())

    def __post_init__(self) -> None:
        int_at_least("image_size", self.image_size, 8)
        optional_positive_int("train_images", self.train_images)
        for name in ("steps", "batch_size"):
            positive_int(name, getattr(self, name))
        one_of("optimizer", self.optimizer, ("sgd", "adamw"))
        base_width(self.width)
        if not 0 <= self.momentum < 1 or not self.weight_decay >= 0:
            raise ValueError(f"momentum must lie in [0, 1) and weight_decay be >= 0, got "
                             f"{self.momentum!r} and {self.weight_decay!r}")
        check_schedule(self)
        names = tuple(get_network(n).name for n in self.networks)
        if not names or len(set(names)) != len(names):
            raise ValueError(f"networks must be distinct names of kdna.scratch.NETWORKS, got "
                             f"{self.networks!r}")
        object.__setattr__(self, "networks", names)

    def with_overrides(self, **overrides: Any) -> ScratchProtocol:
        """A copy with the given fields changed (``TypeError`` naming an unknown field)."""
        return checked_replace(self, "protocol", overrides)


# The committed protocols: what benchmarks/scratch.py runs by default on each kind of device.
CPU_PROTOCOL = ScratchProtocol()
GPU_PROTOCOL = ScratchProtocol(data="cifar100", image_size=32, train_images=None, width=1.0,
                               steps=5000, batch_size=128, lrs=(0.01, 0.03, 0.1, 0.3),
                               seeds=(0, 1, 2, 3, 4))


def committed_protocol(device: torch.device | str | None = None) -> ScratchProtocol:
    """:data:`GPU_PROTOCOL` on CUDA (CIFAR-100, downloaded to the cache root), else
    :data:`CPU_PROTOCOL` (offline MNIST); ``None``: CUDA when there is a GPU."""
    return GPU_PROTOCOL if default_device(device).type == "cuda" else CPU_PROTOCOL


def scratch_key(protocol: ScratchProtocol, network: str, lr: float, seed: int,
                device: torch.device | str = "cpu") -> str:
    """A hash of the whole configuration of one run: every protocol field but the grid, the
    seeds and the networks (a run has one rate, one seed and one network, all hashed), the
    data by its content where it is a folder, the network, the device type and kdna's version."""
    import kdna  # the package's version (at call time: kdna/__init__ imports this layer)

    fields = {k: v for k, v in dataclasses.asdict(protocol).items()
              if k not in ("lrs", "seeds", "networks")}
    fields["data"] = source_key(protocol.data)
    config = {"scratch": fields, "network": get_network(network).name, "lr": float(lr),
              "seed": int(seed), "device": torch.device(device).type, "kdna": kdna.__version__}
    text = json.dumps(config, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def scratch_splits(protocol: ScratchProtocol) -> ProtocolSplits:
    """Train, validation and test splits of ``protocol.data`` (:func:`kdna.load_data`,
    normalised with :data:`MEAN` and :data:`STD`), the training split cut to its first
    ``train_images`` (a class-balanced prefix). A comparison reports test accuracy, so data
    without a test split is a ``ValueError``."""
    data = load_data(protocol.data, image_size=protocol.image_size, mean=MEAN, std=STD,
                     val_fraction=protocol.val_fraction, seed=protocol.split_seed,
                     augment=protocol.augment)
    if data.test is None:
        raise ValueError(f"a comparison reports test accuracy, and {protocol.data!r} has no "
                         f"test split; give data with one, e.g. a folder with train/ and test/")
    train, sources = data.train, dict(data.sources)
    keep = protocol.train_images
    if keep is not None and keep < len(train):
        if keep < len(data.classes):
            raise ValueError(f"train_images={keep} cannot hold one image of each of the "
                             f"{len(data.classes)} classes")
        train = SplitView(train.base, train.indices[:keep], train.transform)
        sources["train"] += (f" (train_images: the first {keep} of {len(data.train)}, "
                             f"class-balanced)")
    return ProtocolSplits(train, data.val, data.test, list(data.classes), data.name, sources)
