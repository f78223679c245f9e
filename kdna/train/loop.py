"""Training and evaluation loops: the reference code's recipe, done so that it really trains.

:func:`fit` runs SGD with momentum (or AdamW), a linear warm-up then cosine decay to
``eta_min`` (stepped every batch), optional label smoothing and gradient clipping, and on a
GPU automatic mixed precision and channels-last. It logs to CSV and TensorBoard, shows
tqdm progress bars, and writes checkpoints that hold everything needed to resume exactly:
model, optimizer, scheduler, gradient scaler, every RNG state and the position in the data.

Under ``torchrun`` (``torch.distributed`` initialised, see :mod:`kdna.train.distributed`) the
model is wrapped in DistributedDataParallel, each rank reads its shard of every epoch, and
rank 0 alone logs and writes checkpoints.

A non-finite loss stops training with :class:`NonFiniteLossError`; nothing is written after
it, so the last checkpoint (written atomically) is the last good state.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from kdna.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from kdna.train.distributed import is_distributed
from kdna.train.distributed import rank as process_rank
from kdna.train.evaluate import Metrics, device_batches, evaluate, recalibrate_batchnorm

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
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")
        if self.amp_dtype not in ("bfloat16", "float16"):
            raise ValueError(f"amp_dtype must be 'bfloat16' or 'float16', got {self.amp_dtype!r}")
        if not self.lr > 0 or self.warmup_epochs < 0 or self.eta_min < 0:
            raise ValueError(f"need lr > 0, warmup_epochs >= 0 and eta_min >= 0, got lr="
                             f"{self.lr}, warmup_epochs={self.warmup_epochs}, "
                             f"eta_min={self.eta_min}")


@dataclass
class TrainResult:
    """What :func:`fit` did: per-epoch history, best accuracy, where the checkpoints are."""

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


class EpochSampler(Sampler[int]):
    """A fresh permutation each epoch from ``(seed, epoch)``, optionally from a given offset.

    The order depends on nothing but the seed and the epoch, so a resumed run sees the same
    batches as an uninterrupted one, starting where it stopped.
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed, self.epoch, self.start = size, seed, 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=generator)[self.start:].tolist())

    def __len__(self) -> int:
        return self.size - self.start


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _schedule(config: TrainConfig, steps_per_epoch: int):
    total = config.epochs * steps_per_epoch
    warmup = round(config.warmup_epochs * steps_per_epoch)
    floor = config.eta_min / config.lr
    offset = config.start_epoch * steps_per_epoch

    def factor(step: int) -> float:
        step += offset
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (all requires_grad=False)")
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, betas=(config.momentum, 0.999),
                             weight_decay=config.weight_decay)


class _Logger:
    """metrics.csv and TensorBoard events, written by rank 0 only."""

    def __init__(self, log_dir: Path, tensorboard: bool, active: bool) -> None:
        self.active, self.writer = active, None
        self.csv = log_dir / "metrics.csv"
        if active:
            log_dir.mkdir(parents=True, exist_ok=True)
            if tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(log_dir))

    def log(self, row: dict[str, float]) -> None:
        if not self.active:
            return
        new = not self.csv.exists()
        with open(self.csv, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)
        if self.writer is not None:
            for key, value in row.items():
                if key not in ("epoch", "step"):
                    self.writer.add_scalar(key, value, row["step"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


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
        a :class:`TrainResult`. Checkpoints are ``out_dir/last.pt`` and ``out_dir/best.pt``.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    amp = config.amp if config.amp is not None else device.type == "cuda"
    channels_last = config.channels_last if config.channels_last is not None else (
        device.type == "cuda")
    amp_dtype = getattr(torch, config.amp_dtype)
    rank, out_dir = process_rank(), Path(config.out_dir)
    distributed = is_distributed()
    state = load_checkpoint(resume) if resume is not None else None  # fail before writing
    torch.manual_seed(config.seed)

    model.to(device)
    if config.bn_momentum is not None:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.momentum = config.bn_momentum
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if distributed:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if distributed:
        sampler = torch.utils.data.DistributedSampler(train_set, shuffle=True, seed=config.seed,
                                                      drop_last=True)
    else:
        sampler = EpochSampler(len(train_set), config.seed)
    # The loader draws its workers' base seed from its own generator, re-seeded every epoch,
    # never from the global RNG: a resumed run's RNG stream then matches an unbroken one.
    loader_rng = torch.Generator()
    loader = DataLoader(train_set, batch_size=config.batch_size, sampler=sampler, drop_last=True,
                        num_workers=config.workers, pin_memory=device.type == "cuda",
                        generator=loader_rng)
    steps_per_epoch = len(sampler) // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"the training set ({len(train_set)} samples) is smaller than one "
                         f"batch ({config.batch_size}); lower batch_size")
    optimizer = _optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(config, steps_per_epoch))
    scaler = torch.amp.GradScaler(device.type, enabled=amp and amp_dtype == torch.float16)
    result, epoch, skip = TrainResult(), config.start_epoch, 0
    if state is not None:
        _unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        epoch, skip, result.steps = state["epoch"], state["step_in_epoch"], state["global_step"]
        result.best_top1, result.history = state["best_top1"], list(state["history"])

    def checkpoint(name: str, epoch: int, step_in_epoch: int) -> Path | None:
        if rank != 0:
            return None
        return save_checkpoint({
            "model": _unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            "rng": rng_state(), "epoch": epoch, "step_in_epoch": step_in_epoch,
            "global_step": result.steps, "best_top1": result.best_top1,
            "config": asdict(config), "meta": dict(meta or {}),
            "history": result.history}, out_dir / name)

    logger = _Logger(Path(config.log_dir or out_dir), config.tensorboard, rank == 0)
    show = config.progress and rank == 0
    start_time = time.perf_counter()
    try:
        while epoch < config.epochs:
            if distributed:
                sampler.set_epoch(epoch)
            else:
                sampler.set_epoch(epoch, skip * config.batch_size)
            loader_rng.manual_seed(config.seed * 100_003 + epoch)
            model.train()
            sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss, correct, n
            step_in_epoch = skip
            for images, labels in device_batches(loader, device, channels_last,
                                           f"epoch {epoch + 1}/{config.epochs}", show):
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
                    logits = model(images)
                    loss = F.cross_entropy(logits.float(), labels,
                                           label_smoothing=config.label_smoothing)
                if not torch.isfinite(loss):
                    raise NonFiniteLossError(
                        f"the loss became {loss.item()} at epoch {epoch + 1}, step "
                        f"{step_in_epoch + 1}; stopped. The last good checkpoint, "
                        f"{out_dir / 'last.pt'}, is intact: lower the learning rate or set "
                        f"grad_clip, then resume from it.")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if config.grad_clip is not None:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                result.steps += 1
                step_in_epoch += 1
                sums += torch.stack([loss.detach() * len(labels),
                                     (logits.argmax(1) == labels).sum(),
                                     torch.tensor(len(labels), device=device)]).double()
                if config.checkpoint_every and result.steps % config.checkpoint_every == 0:
                    result.last_checkpoint = checkpoint("last.pt", epoch, step_in_epoch)
                if config.max_steps is not None and result.steps >= config.max_steps:
                    result.last_checkpoint = checkpoint("last.pt", epoch, step_in_epoch)
                    return result
            epoch, skip = epoch + 1, 0
            loss_sum, correct, n = sums.tolist()
            row = {"epoch": epoch, "step": result.steps,
                   "train_loss": loss_sum / max(1, n), "train_top1": 100 * correct / max(1, n),
                   "lr": optimizer.param_groups[0]["lr"],
                   "seconds": time.perf_counter() - start_time}
            if config.bn_recalibration:
                recalibrate_batchnorm(model, train_set, config.bn_recalibration,
                                      config.batch_size, device, channels_last)
            if val_set is not None:
                metrics = evaluate(model, val_set, batch_size=config.eval_batch_size,
                                   device=device, workers=config.workers, progress=show,
                                   channels_last=channels_last)
                row |= {"val_loss": metrics.loss, "val_top1": metrics.top1,
                        "val_top5": metrics.top5}
            result.history.append(row)
            logger.log(row)
            improved = row.get("val_top1", -1.0) > result.best_top1
            result.best_top1 = max(result.best_top1, row.get("val_top1", 0.0))
            result.last_checkpoint = checkpoint("last.pt", epoch, 0)
            if improved and rank == 0:
                result.best_checkpoint = checkpoint("best.pt", epoch, 0)
    finally:
        result.seconds += time.perf_counter() - start_time
        logger.close()
    return result
