"""Training and evaluation loops: the reference code's recipe, done so that it really trains.

:func:`train_classifier` runs SGD with momentum (or AdamW), a linear warm-up then cosine decay to
``eta_min`` (stepped every batch), optional label smoothing and gradient clipping, and on a
GPU automatic mixed precision (:func:`kdna.train.devices.autocast_for`: bfloat16 from compute
capability 8.0, float16 with a gradient scaler below) and channels-last. It logs to CSV and
TensorBoard, shows tqdm progress bars, and writes checkpoints that hold everything needed to
resume exactly: model, optimizer, scheduler, gradient scaler, every RNG state and the position
in the data. Data loading workers default to none on a CPU and up to four on CUDA
(:func:`kdna.train.devices.loader_workers`); each item's random transforms are seeded from its
place in the epoch, so a run resumes exactly with workers too.
The optimiser and the schedule come from :mod:`kdna.train.schedule`, shared with the dense
prediction loop. Accuracies (history rows, :attr:`TrainResult.best_top1`) are fractions in
[0, 1].

Under ``torchrun`` (``torch.distributed`` initialised, see :mod:`kdna.train.distributed`) the
model is wrapped in DistributedDataParallel, each rank reads its shard of every epoch, and
rank 0 alone logs and writes checkpoints.

A non-finite loss stops training with :class:`NonFiniteLossError`; nothing is written after
it, so the last checkpoint (written atomically) is the last good state. SIGINT (Ctrl-C) and
SIGTERM finish the current step, write ``last.pt`` and raise :class:`TrainingInterrupted`
(:mod:`kdna.train.interrupt`). A checkpoint may be written mid-epoch, after an epoch's last
step but before its evaluation, after the evaluation, or after the final epoch; a run resumed
from any of them ends with the weights of an unbroken one. The checkpoint folder gets a
test write before training starts.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from kdna.nn.norm import BATCH_NORMS
from kdna.nn.utils import default_device
from kdna.train.checkpoint import (
    check_writable,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from kdna.train.config import NonFiniteLossError, TrainConfig, TrainResult, check_train_args
from kdna.train.devices import autocast_for, loader_options
from kdna.train.distributed import is_distributed
from kdna.train.distributed import rank as process_rank
from kdna.train.evaluate import Metrics, device_batches, evaluate, recalibrate_batchnorm
from kdna.train.interrupt import StopSignals, TrainingInterrupted, ignore_sigint
from kdna.train.logs import MetricsLogger
from kdna.train.sampler import EpochSampler, SeededItems, SeededSampler, epoch_seed
from kdna.train.schedule import build_optimizer, warmup_cosine

__all__ = ["Metrics", "NonFiniteLossError", "TrainConfig", "TrainResult", "TrainingInterrupted",
           "evaluate", "recalibrate_batchnorm", "train_classifier"]


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


class _Trainer:
    """One call of :func:`train_classifier`: the model as trained (DDP-wrapped under
    torchrun), its data, optimiser, schedule and gradient scaler, the result so far and the
    position in the data (``epoch``, the batches of it already done, ``skip``, and their
    ``[loss sum, correct, samples]``, ``sums``)."""

    def __init__(self, model: nn.Module, train_set: Dataset, config: TrainConfig,
                 device: torch.device | str | None, resume: str | Path | None,
                 meta: dict[str, Any] | None) -> None:
        self.config, self.meta = config, dict(meta or {})
        self.device = default_device(device)
        cuda = self.device.type == "cuda"
        self.precision = autocast_for(self.device, amp=config.amp, dtype=config.amp_dtype)
        self.channels_last = config.channels_last if config.channels_last is not None else cuda
        self.rank, self.out_dir = process_rank(), Path(config.out_dir)
        self.distributed = is_distributed()
        state = load_checkpoint(resume) if resume is not None else None  # fail before writing
        if self.rank == 0:  # an unwritable or full folder is found before any training
            check_writable(self.out_dir)
        torch.manual_seed(config.seed)
        self.model = self._place(model)
        self._build_loader(train_set)
        self.optimizer = build_optimizer(self.model, config.optimizer, lr=config.lr,
                                         momentum=config.momentum,
                                         weight_decay=config.weight_decay,
                                         decay_on=config.weight_decay_on)
        total = config.epochs * self.steps_per_epoch
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_cosine(
            total, round(config.warmup_epochs * self.steps_per_epoch),
            floor=config.eta_min / config.lr, offset=config.start_epoch * self.steps_per_epoch))
        self.scaler = self.precision.grad_scaler(self.device)  # disabled: a pass-through
        self.result, self.epoch, self.skip = TrainResult(), config.start_epoch, 0
        self.sums = torch.zeros(3, dtype=torch.float64, device=self.device)
        if state is not None:
            self._restore(state)

    def _place(self, model: nn.Module) -> nn.Module:
        """``model`` on the device, BatchNorm momentum and memory format set, DDP-wrapped."""
        model.to(self.device)
        if self.config.bn_momentum is not None:
            for module in model.modules():
                if isinstance(module, BATCH_NORMS):
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
        # unbroken one. Workers seed each item from its place in the epoch (SeededItems), so
        # random transforms do not depend on which worker reads it.
        self.loader_rng = torch.Generator()
        options = loader_options(self.device, config.workers)
        dataset, order = train_set, self.sampler
        if options["num_workers"]:
            dataset, order = SeededItems(train_set), SeededSampler(self.sampler, config.seed,
                                                                   self.rank)
        self.loader = DataLoader(dataset, batch_size=config.batch_size, sampler=order,
                                 drop_last=True, generator=self.loader_rng,
                                 worker_init_fn=ignore_sigint, **options)
        self.steps_per_epoch = len(self.sampler) // config.batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(f"the training set ({len(train_set)} samples) is smaller than one "
                             f"batch ({config.batch_size}); lower batch_size")

    def _restore(self, state: dict[str, Any]) -> None:
        _unwrap(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state["scaler"]:  # empty: saved without a scaler (bf16 or none); start afresh
            self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self.epoch, self.skip = state["epoch"], state["step_in_epoch"]
        if not 0 <= self.skip <= self.steps_per_epoch:
            raise ValueError(f"the checkpoint stopped at step {self.skip} of an epoch, but an "
                             f"epoch here has {self.steps_per_epoch} steps: resume with the "
                             f"data and batch size it was trained with")
        self.sums = torch.tensor(state.get("epoch_sums", [0.0, 0.0, 0.0]),
                                 dtype=torch.float64, device=self.device)
        self.result.steps = state["global_step"]
        self.result.best_top1, self.result.history = state["best_top1"], list(state["history"])

    def checkpoint(self, name: str) -> Path | None:
        """Write ``out_dir/name`` at the position reached (rank 0 only; others: ``None``)."""
        if self.rank != 0:
            return None
        return save_checkpoint({
            "model": _unwrap(self.model).state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "rng": rng_state(), "epoch": self.epoch, "step_in_epoch": self.skip,
            "epoch_sums": self.sums.tolist(),
            "global_step": self.result.steps, "best_top1": self.result.best_top1,
            "config": asdict(self.config), "meta": self.meta,
            "history": self.result.history}, self.out_dir / name)

    def train_epoch(self, show: bool, signals: StopSignals) -> str:
        """Train on the rest of epoch ``epoch``. Returns ``"done"`` (the epoch's last step is
        done), ``"max_steps"`` (the budget is spent; checkpoint written) or ``"signal"`` (a
        signal came; the step in progress was finished)."""
        config, result = self.config, self.result
        if self.skip >= self.steps_per_epoch:  # resumed after the last step, before evaluation
            return "done"
        if self.distributed:
            self.sampler.set_epoch(self.epoch)
        else:
            self.sampler.set_epoch(self.epoch, self.skip * config.batch_size)
        self.loader_rng.manual_seed(epoch_seed(config.seed, self.epoch))
        self.model.train()
        for images, labels in device_batches(self.loader, self.device, self.channels_last,
                                             f"epoch {self.epoch + 1}/{config.epochs}", show):
            self.sums += self._step(images, labels, self.skip)
            result.steps += 1
            self.skip += 1
            if self._stop_requested(signals):
                return "signal"
            if config.max_steps is not None and result.steps >= config.max_steps:
                result.last_checkpoint = self.checkpoint("last.pt")
                return "max_steps"
            if config.checkpoint_every and result.steps % config.checkpoint_every == 0:
                result.last_checkpoint = self.checkpoint("last.pt")
            if self.skip >= self.steps_per_epoch:
                break
        return "done"

    def _stop_requested(self, signals: StopSignals) -> bool:
        """Whether a signal came; under torchrun, whether one came to any rank (all ranks
        stop after the same step)."""
        if not self.distributed:
            return signals.received is not None
        flag = torch.tensor([0.0 if signals.received is None else 1.0], device=self.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        if flag.item() and signals.received is None:
            signals.received = 2  # another rank was interrupted: stop as for SIGINT
        return bool(flag.item())

    def _step(self, images: torch.Tensor, labels: torch.Tensor, step_in_epoch: int
              ) -> torch.Tensor:
        """One optimiser step; ``[loss sum, correct, samples]`` of the batch."""
        config, optimizer, scaler = self.config, self.optimizer, self.scaler
        with self.precision.autocast(self.device):
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

    def end_epoch(self, train_set: Dataset, val_set: Dataset | None, logger: MetricsLogger,
                  show: bool, seconds: float, signals: StopSignals) -> bool:
        """Close the finished epoch: BatchNorm recalibration and evaluation if asked, its
        history row (accuracies as fractions) logged, the position moved to the next epoch,
        ``last.pt`` and, if it improved, ``best.pt`` written. ``False`` (nothing changed) when
        a signal interrupted the evaluation."""
        result = self.result
        loss_sum, correct, n = self.sums.tolist()
        row = {"epoch": self.epoch + 1, "step": result.steps,
               "train_loss": loss_sum / max(1, n), "train_top1": correct / max(1, n),
               "lr": self.optimizer.param_groups[0]["lr"], "seconds": seconds}
        before = rng_state()  # evaluation draws from the global RNG (its loader's seed)
        finished, metrics = signals.interruptibly(lambda: self._evaluate(train_set, val_set, show))
        if not finished:  # back to just before evaluation, the position last.pt will hold
            set_rng_state(before)
            return False
        if metrics is not None:
            row |= {"val_loss": metrics.loss, "val_top1": metrics.top1, "val_top5": metrics.top5}
        result.history.append(row)
        logger.log(row)
        improved = row.get("val_top1", -1.0) > result.best_top1
        result.best_top1 = max(result.best_top1, row.get("val_top1", 0.0))
        self.epoch, self.skip = self.epoch + 1, 0
        self.sums = torch.zeros_like(self.sums)
        result.last_checkpoint = self.checkpoint("last.pt")
        if improved and self.rank == 0:
            result.best_checkpoint = self.checkpoint("best.pt")
        return True

    def _evaluate(self, train_set: Dataset, val_set: Dataset | None, show: bool
                  ) -> Metrics | None:
        config = self.config
        if config.bn_recalibration:
            recalibrate_batchnorm(self.model, train_set, config.bn_recalibration,
                                  config.batch_size, self.device, self.channels_last)
        if val_set is None:
            return None
        return evaluate(self.model, val_set, batch_size=config.eval_batch_size,
                        device=self.device, workers=config.workers, progress=show,
                        channels_last=self.channels_last)

    def interrupted(self, signals: StopSignals) -> TrainingInterrupted:
        """Write ``last.pt`` at the position reached; the exception that says so."""
        self.result.last_checkpoint = self.checkpoint("last.pt")
        return TrainingInterrupted(signals.received or 2, self.result.last_checkpoint,
                                   self.result.steps)


def train_classifier(model: nn.Module, train_set: Dataset, val_set: Dataset | None,
                     config: TrainConfig, *, device: torch.device | str | None = None,
                     resume: str | Path | None = None, meta: dict[str, Any] | None = None
                     ) -> TrainResult:
    """Train ``model`` on ``train_set``, evaluating on ``val_set`` after every epoch.

    Args:
        model: any classifier; only parameters with ``requires_grad`` are trained (see
            :func:`kdna.adapter_only`).
        config: a :class:`TrainConfig`.
        device: where to train (default: CUDA when available).
        resume: a checkpoint written by an earlier ``train_classifier``: training continues
            exactly where it stopped (same data order, RNG states, optimizer and schedule).
        meta: plain values stored in every checkpoint (e.g. how to rebuild the model).

    Returns:
        a :class:`TrainResult` (accuracies as fractions in [0, 1]). Checkpoints are
        ``out_dir/last.pt`` and ``out_dir/best.pt``.
    """
    check_train_args(model, train_set, val_set, config)
    run = _Trainer(model, train_set, config, device, resume, meta)
    logger = MetricsLogger(Path(config.log_dir or run.out_dir), config.tensorboard, run.rank == 0)
    show = config.progress and run.rank == 0
    start_time = time.perf_counter()
    try:
        with StopSignals() as signals:
            while run.epoch < config.epochs:
                outcome = run.train_epoch(show, signals)
                if outcome == "max_steps":
                    break
                if outcome == "signal" or not run.end_epoch(
                        train_set, val_set, logger, show, time.perf_counter() - start_time,
                        signals):
                    raise run.interrupted(signals)
    finally:
        run.result.seconds += time.perf_counter() - start_time
        logger.close()
    return run.result
