"""What :func:`kdna.train.train_classifier` is told and what it returns: :class:`TrainConfig` (every
field checked when it is made), :class:`TrainResult`, :class:`NonFiniteLossError`, and the
checks of ``train_classifier``'s own arguments."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from kdna._checks import (
    instance_arg,
    int_at_least,
    module_arg,
    non_negative_float,
    one_of,
    optional_positive_int,
    positive_float,
    positive_int,
)
from kdna.train.schedule import DECAY_ON, OPTIMIZERS

__all__ = ["NonFiniteLossError", "TrainConfig", "TrainResult", "check_train_args"]


@dataclass
class TrainConfig:
    """How to train. Defaults are the reference recipe for ResNet-18 at a small batch."""

    epochs: int = 10                 # passes over the training set
    batch_size: int = 64             # per process; the last incomplete batch is dropped
    optimizer: str = "sgd"           # "sgd" (momentum, the reference) or "adamw"
    lr: float = 0.1                  # peak learning rate, reached at the end of warm-up
    momentum: float = 0.9            # SGD momentum (AdamW: beta1)
    weight_decay: float = 1e-4       # how strongly weights are pulled towards zero
    weight_decay_on: str = "all"     # "all": every trainable parameter (the reference);
    #                                   "weights": kernels and weight matrices only, not norms,
    #                                   biases, static scales or gates (fine-tuning;
    #                                   kdna.train.schedule.weight_decay_groups)
    warmup_epochs: float = 0.0       # linear warm-up length (fractions allowed)
    eta_min: float = 0.0             # learning rate at the end of the cosine
    label_smoothing: float = 0.0     # cross-entropy label smoothing
    grad_clip: float | None = None   # clip the global gradient norm to this, if set
    amp: bool | None = None          # mixed precision; None: on when training on CUDA
    amp_dtype: str | None = None     # "bfloat16", "float16" (with a gradient scaler), or None:
    #                                   bfloat16 from compute capability 8.0, float16 below
    #                                   (kdna.train.devices.autocast_for)
    channels_last: bool | None = None  # NHWC memory format; None: on when training on CUDA
    workers: int | None = None       # DataLoader worker processes; None: 0 on a CPU, up to 4
    #                                   on CUDA (kdna.train.devices.loader_workers)
    seed: int = 0                    # data order and initial RNG state
    start_epoch: int = 0             # begin here, schedule included (ignored when resuming)
    max_steps: int | None = None     # stop after this many optimizer steps in all (budgets)
    checkpoint_every: int | None = None  # also checkpoint every N steps (resume mid-epoch)
    out_dir: str = "runs/train"      # checkpoints (last.pt, best.pt) go here
    log_dir: str | None = None       # metrics.csv and TensorBoard events (default: out_dir)
    tensorboard: bool = True         # write TensorBoard events beside metrics.csv
    progress: bool = True            # tqdm progress bars
    eval_batch_size: int = 256       # validation batch size
    bn_recalibration: int = 0        # before each evaluation, re-estimate BatchNorm statistics
    #                                   from this many training batches (right after
    #                                   kdna.convert the weights move faster than the
    #                                   running averages can follow)
    bn_momentum: float | None = None  # set every BatchNorm's momentum (0.1: PyTorch's usual;
    #                                   short fine-tunes of TF-trained models, whose 0.01
    #                                   would leave the running statistics behind)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size"):
            positive_int(name, getattr(self, name))
        one_of("optimizer", self.optimizer, OPTIMIZERS)
        one_of("weight_decay_on", self.weight_decay_on, DECAY_ON)
        if self.amp_dtype is not None:
            one_of("amp_dtype", self.amp_dtype, ("bfloat16", "float16"))
        positive_float("lr", self.lr)
        non_negative_float("warmup_epochs", self.warmup_epochs)
        non_negative_float("eta_min", self.eta_min)
        if self.warmup_epochs > self.epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must not be longer than "
                             f"training (epochs={self.epochs})")
        if self.workers is not None:
            int_at_least("workers", self.workers, 0)
        for name in ("max_steps", "checkpoint_every"):
            optional_positive_int(name, getattr(self, name))
        if self.grad_clip is not None:
            positive_float("grad_clip", self.grad_clip)
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must lie in [0, 1), got {self.label_smoothing!r}")


@dataclass
class TrainResult:
    """What :func:`~kdna.train.train_classifier` did: per-epoch history, best accuracy, where
    the checkpoints are.

    Each history row holds ``epoch``, ``step``, ``train_loss``, ``train_top1``, ``lr``,
    ``seconds`` and, with a validation set, ``val_loss``, ``val_top1``, ``val_top5``; every
    accuracy (and ``best_top1``, the best ``val_top1``) is a fraction in [0, 1].
    ``train_top1`` is over this process's batches, as they were trained.
    """

    history: list[dict[str, float]] = field(default_factory=list)
    best_top1: float = 0.0
    last_checkpoint: Path | None = None
    best_checkpoint: Path | None = None
    steps: int = 0
    seconds: float = 0.0

    @property
    def seconds_per_step(self) -> float:
        return self.seconds / max(1, self.steps)


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; training stopped with the last checkpoint intact."""


def check_train_args(model: object, train_set: object, val_set: object, config: object) -> None:
    """``TypeError`` naming the argument of :func:`kdna.train.train_classifier` that has the
    wrong type."""
    module_arg("model", model)
    for name, value in (("train_set", train_set), ("val_set", val_set)):
        if value is None and name == "val_set":
            continue
        if (isinstance(value, str | bytes | torch.Tensor) or value is None
                or not (hasattr(value, "__getitem__") and hasattr(value, "__len__"))):
            raise TypeError(f"{name} must be a map-style data set (with __getitem__ and "
                            f"__len__, e.g. load_data(...).train or a TensorDataset), got a "
                            f"{type(value).__name__}")
    instance_arg("config", config, TrainConfig, "a kdna.train.TrainConfig")
