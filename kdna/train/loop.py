"""Training and evaluation loops: the reference code's recipe, done so that it really trains.

:func:`fit` runs SGD with momentum (or AdamW), a linear warm-up then cosine decay to
``eta_min`` (stepped every batch), optional label smoothing and gradient clipping, and on a
GPU automatic mixed precision and channels-last. It logs to CSV and TensorBoard, shows
tqdm progress bars, and writes checkpoints that hold everything needed to resume exactly:
model, optimizer, scheduler, gradient scaler, every RNG state and the position in the data.
The optimiser and the schedule come from :mod:`kdna.train.schedule`, shared with the dense
prediction loop. Accuracies (history rows, :attr:`TrainResult.best_top1`) are fractions in
[0, 1].

Under ``torchrun`` (``torch.distributed`` initialised, see :mod:`kdna.train.distributed`) the
model is wrapped in DistributedDataParallel, each rank reads its shard of every epoch, and
rank 0 alone logs and writes checkpoints.

A non-finite loss stops training with :class:`NonFiniteLossError`; nothing is written after
it, so the last checkpoint (written atomically) is the last good state.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from kdna._checks import non_negative_float, one_of, positive_float, positive_int
from kdna.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from kdna.train.distributed import is_distributed
from kdna.train.distributed import rank as process_rank
from kdna.train.evaluate import Metrics, device_batches, evaluate, recalibrate_batchnorm
from kdna.train.logs import MetricsLogger
from kdna.train.sampler import EpochSampler, epoch_seed
from kdna.train.schedule import OPTIMIZERS, build_optimizer, warmup_cosine

__all__ = ["Metrics", "NonFiniteLossError", "TrainConfig", "TrainResult", "evaluate", "fit",
           "recalibrate_batchnorm"]


@dataclass
class TrainConfig:
    """How to train. Defaults are the reference recipe for ResNet-18 at a small batch."""

    epochs: int = 10                 # passes over the training set
    batch_size: int = 64             # per process; the last incomplete batch is dropped
    optimizer: str = "sgd"           # "sgd" (momentum, the reference) or "adamw"
    lr: float = 0.1                  # peak learning rate, reached at the end of warm-up
    momentum: float = 0.9            # SGD momentum (AdamW: beta1)
    weight_decay: float = 1e-4       # applied to every trainable parameter, as the reference
    warmup_epochs: float = 0.0       # linear warm-up length (fractions allowed)
    eta_min: float = 0.0             # learning rate at the end of the cosine
    label_smoothing: float = 0.0     # cross-entropy label smoothing
    grad_clip: float | None = None   # clip the global gradient norm to this, if set
    amp: bool | None = None          # mixed precision; None: on when training on CUDA
    amp_dtype: str = "bfloat16"      # "bfloat16", or "float16" (with a gradient scaler)
    channels_last: bool | None = None  # NHWC memory format; None: on when training on CUDA
    workers: int = 0                 # DataLoader worker processes (0: exact resume mid-epoch)
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
        one_of("amp_dtype", self.amp_dtype, ("bfloat16", "float16"))
        positive_float("lr", self.lr)
        non_negative_float("warmup_epochs", self.warmup_epochs)
        non_negative_float("eta_min", self.eta_min)


@dataclass
class TrainResult:
    """What :func:`fit` did: per-epoch history, best accuracy, where the checkpoints are.

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


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


class _Run:
    """One call of :func:`fit`: the model as trained (DDP-wrapped under torchrun), its data,
    optimiser, schedule and gradient scaler, the result so far and the position in the data
    (``epoch`` and the batches of it already done, ``skip``)."""

    def __init__(self, model: nn.Module, train_set: Dataset, config: TrainConfig,
                 device: torch.device | str | None, resume: str | Path | None,
                 meta: dict[str, Any] | None) -> None:
        self.config, self.meta = config, dict(meta or {})
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        cuda = self.device.type == "cuda"
        self.amp = config.amp if config.amp is not None else cuda
        self.channels_last = config.channels_last if config.channels_last is not None else cuda
        self.amp_dtype = getattr(torch, config.amp_dtype)
        self.rank, self.out_dir = process_rank(), Path(config.out_dir)
        self.distributed = is_distributed()
        state = load_checkpoint(resume) if resume is not None else None  # fail before writing
        torch.manual_seed(config.seed)
        self.model = self._place(model)
        self._build_loader(train_set)
        self.optimizer = build_optimizer(self.model.parameters(), config.optimizer, lr=config.lr,
                                         momentum=config.momentum,
                                         weight_decay=config.weight_decay)
        total = config.epochs * self.steps_per_epoch
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_cosine(
            total, round(config.warmup_epochs * self.steps_per_epoch),
            floor=config.eta_min / config.lr, offset=config.start_epoch * self.steps_per_epoch))
        self.scaler = torch.amp.GradScaler(self.device.type,
                                           enabled=self.amp and self.amp_dtype == torch.float16)
        self.result, self.epoch, self.skip = TrainResult(), config.start_epoch, 0
        if state is not None:
            self._restore(state)

    def _place(self, model: nn.Module) -> nn.Module:
        """``model`` on the device, BatchNorm momentum and memory format set, DDP-wrapped."""
        model.to(self.device)
        if self.config.bn_momentum is not None:
            for module in model.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.momentum = self.config.bn_momentum
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        if self.distributed:
            model = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        return model

    def _build_loader(self, train_set: Dataset) -> None:
        config = self.config
        if self.distributed:
            self.sampler: Sampler[int] = torch.utils.data.DistributedSampler(
                train_set, shuffle=True, seed=config.seed, drop_last=True)
        else:
            self.sampler = EpochSampler(len(train_set), config.seed)
        # The loader draws its workers' base seed from its own generator, re-seeded every
        # epoch, never from the global RNG: a resumed run's RNG stream then matches an
        # unbroken one.
        self.loader_rng = torch.Generator()
        self.loader = DataLoader(train_set, batch_size=config.batch_size, sampler=self.sampler,
                                 drop_last=True, num_workers=config.workers,
                                 pin_memory=self.device.type == "cuda",
                                 generator=self.loader_rng)
        self.steps_per_epoch = len(self.sampler) // config.batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(f"the training set ({len(train_set)} samples) is smaller than one "
                             f"batch ({config.batch_size}); lower batch_size")

    def _restore(self, state: dict[str, Any]) -> None:
        _unwrap(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self.epoch, self.skip = state["epoch"], state["step_in_epoch"]
        self.result.steps = state["global_step"]
        self.result.best_top1, self.result.history = state["best_top1"], list(state["history"])

    def checkpoint(self, name: str, step_in_epoch: int) -> Path | None:
        """Write ``out_dir/name`` (rank 0 only; other ranks return ``None``)."""
        if self.rank != 0:
            return None
        return save_checkpoint({
            "model": _unwrap(self.model).state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "rng": rng_state(), "epoch": self.epoch, "step_in_epoch": step_in_epoch,
            "global_step": self.result.steps, "best_top1": self.result.best_top1,
            "config": asdict(self.config), "meta": self.meta,
            "history": self.result.history}, self.out_dir / name)

    def train_epoch(self, show: bool) -> list[float] | None:
        """Train on the rest of epoch ``epoch``: ``[loss sum, correct, samples]`` of this
        rank's batches, or ``None`` when ``max_steps`` stopped the run (checkpoint written)."""
        config, result = self.config, self.result
        if self.distributed:
            self.sampler.set_epoch(self.epoch)
        else:
            self.sampler.set_epoch(self.epoch, self.skip * config.batch_size)
        self.loader_rng.manual_seed(epoch_seed(config.seed, self.epoch))
        self.model.train()
        sums = torch.zeros(3, dtype=torch.float64, device=self.device)  # loss, correct, n
        step_in_epoch = self.skip
        for images, labels in device_batches(self.loader, self.device, self.channels_last,
                                             f"epoch {self.epoch + 1}/{config.epochs}", show):
            sums += self._step(images, labels, step_in_epoch)
            result.steps += 1
            step_in_epoch += 1
            if config.checkpoint_every and result.steps % config.checkpoint_every == 0:
                result.last_checkpoint = self.checkpoint("last.pt", step_in_epoch)
            if config.max_steps is not None and result.steps >= config.max_steps:
                result.last_checkpoint = self.checkpoint("last.pt", step_in_epoch)
                return None
        self.epoch, self.skip = self.epoch + 1, 0
        return sums.tolist()

    def _step(self, images: torch.Tensor, labels: torch.Tensor, step_in_epoch: int
              ) -> torch.Tensor:
        """One optimiser step; ``[loss sum, correct, samples]`` of the batch."""
        config, optimizer, scaler = self.config, self.optimizer, self.scaler
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
            logits = self.model(images)
            loss = F.cross_entropy(logits.float(), labels,
                                   label_smoothing=config.label_smoothing)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"the loss became {loss.item()} at epoch {self.epoch + 1}, step "
                f"{step_in_epoch + 1}; stopped. The last good checkpoint, "
                f"{self.out_dir / 'last.pt'}, is intact: lower the learning rate or set "
                f"grad_clip, then resume from it.")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if config.grad_clip is not None:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        self.scheduler.step()
        return torch.stack([loss.detach() * len(labels), (logits.argmax(1) == labels).sum(),
                            torch.tensor(len(labels), device=self.device)]).double()

    def end_epoch(self, sums: list[float], train_set: Dataset, val_set: Dataset | None,
                  logger: MetricsLogger, show: bool, seconds: float) -> None:
        """Close the finished epoch: BatchNorm recalibration and evaluation if asked, its
        history row (accuracies as fractions) logged, ``last.pt`` and, if it improved,
        ``best.pt`` written."""
        config, result = self.config, self.result
        loss_sum, correct, n = sums
        row = {"epoch": self.epoch, "step": result.steps,
               "train_loss": loss_sum / max(1, n), "train_top1": correct / max(1, n),
               "lr": self.optimizer.param_groups[0]["lr"], "seconds": seconds}
        if config.bn_recalibration:
            recalibrate_batchnorm(self.model, train_set, config.bn_recalibration,
                                  config.batch_size, self.device, self.channels_last)
        if val_set is not None:
            metrics = evaluate(self.model, val_set, batch_size=config.eval_batch_size,
                               device=self.device, workers=config.workers, progress=show,
                               channels_last=self.channels_last)
            row |= {"val_loss": metrics.loss, "val_top1": metrics.top1, "val_top5": metrics.top5}
        result.history.append(row)
        logger.log(row)
        improved = row.get("val_top1", -1.0) > result.best_top1
        result.best_top1 = max(result.best_top1, row.get("val_top1", 0.0))
        result.last_checkpoint = self.checkpoint("last.pt", 0)
        if improved and self.rank == 0:
            result.best_checkpoint = self.checkpoint("best.pt", 0)


def fit(model: nn.Module, train_set: Dataset, val_set: Dataset | None, config: TrainConfig,
        *, device: torch.device | str | None = None, resume: str | Path | None = None,
        meta: dict[str, Any] | None = None) -> TrainResult:
    """Train ``model`` on ``train_set``, evaluating on ``val_set`` after every epoch.

    Args:
        model: any classifier; only parameters with ``requires_grad`` are trained (see
            :func:`kdna.adapter_only`).
        config: a :class:`TrainConfig`.
        device: where to train (default: CUDA when available).
        resume: a checkpoint written by an earlier ``fit``: training continues exactly where
            it stopped (same data order, RNG states, optimizer and schedule).
        meta: plain values stored in every checkpoint (e.g. how to rebuild the model).

    Returns:
        a :class:`TrainResult` (accuracies as fractions in [0, 1]). Checkpoints are
        ``out_dir/last.pt`` and ``out_dir/best.pt``.
    """
    run = _Run(model, train_set, config, device, resume, meta)
    logger = MetricsLogger(Path(config.log_dir or run.out_dir), config.tensorboard, run.rank == 0)
    show = config.progress and run.rank == 0
    start_time = time.perf_counter()
    try:
        while run.epoch < config.epochs:
            sums = run.train_epoch(show)
            if sums is None:  # max_steps reached
                break
            run.end_epoch(sums, train_set, val_set, logger, show,
                          time.perf_counter() - start_time)
    finally:
        run.result.seconds += time.perf_counter() - start_time
        logger.close()
    return run.result
