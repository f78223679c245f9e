"""Every flag of ``kdna train / eval / metrics / demo`` checked before any data is read or
model built: each failure is a :class:`kdna.cli.errors.UsageError` naming the flag, the value
and what is expected."""

from __future__ import annotations

import argparse
import difflib
import os
from pathlib import Path

import torch

from kdna.cli.errors import UsageError
from kdna.data.classification import list_datasets
from kdna.models import canonical_name
from kdna.train.checkpoint import check_writable

__all__ = ["check_demo_args", "check_finetune_args", "check_metrics_args", "check_train_args"]


def _int(flag: str, value: int | None, low: int = 1) -> None:
    if value is not None and value < low:
        what = "a positive integer" if low == 1 else f"an integer of at least {low}"
        raise UsageError(f"{flag} must be {what}, got {value}")


def _number(flag: str, value: float | None, low: float = 0.0, *, strict: bool = False,
            high: float | None = None) -> None:
    if value is None:
        return
    if value != value or (value <= low if strict else value < low) or (
            high is not None and value >= high):
        bound = f"above {low}" if strict else f"at least {low}"
        upper = f" and below {high}" if high is not None else ""
        raise UsageError(f"{flag} must be a number {bound}{upper}, got {value}")


def _arch(value: str) -> None:
    try:
        canonical_name(value)
    except ValueError as exc:
        raise UsageError(f"--arch: {exc}") from None


def _data(value: str | None) -> None:
    """A name ``load_data`` knows, or a folder that exists and holds something."""
    if value is None or value.strip().lower() in {*list_datasets(), "dummy"}:
        return
    path = Path(value).expanduser()
    if not path.exists():
        close = difflib.get_close_matches(value.strip().lower(), list(list_datasets()), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UsageError(f"--data {value!r}: no such folder, and not a data set name{hint}; "
                         f"names: {', '.join(list_datasets())}")
    if not path.is_dir():
        raise UsageError(f"--data {value!r} is a file; give an ImageFolder folder (one folder "
                         f"of images per class, or train/ and val/ that each hold them)")
    if not any(e for e in os.scandir(path) if not e.name.startswith(".")):
        raise UsageError(f"--data {value!r} is an empty folder; it must hold one folder of "
                         f"images per class, or train/ and val/")


def _resume(value: str | None) -> None:
    if value is None:
        return
    path = Path(value).expanduser()
    if not path.exists():
        raise UsageError(f"--resume {value!r}: no such file")
    if path.is_dir():
        raise UsageError(f"--resume {value!r} is a folder; give a checkpoint file such as "
                         f"{str(path / 'last.pt')!r}")
    if not os.access(path, os.R_OK):
        raise UsageError(f"--resume {value!r} cannot be read (permission denied)")


def check_train_args(args: argparse.Namespace) -> None:
    """``kdna train`` / ``kdna eval``: values, names, files and folders, devices."""
    _arch(args.arch)
    for flag, value, low in (("-b/--batch-size", args.batch_size, 1), ("--epochs", args.epochs, 1),
                             ("-j/--workers", args.workers, 0), ("--limit", args.limit, 1),
                             ("--max-steps", args.max_steps, 1),
                             ("--checkpoint-every", args.checkpoint_every, 1),
                             ("--image-size", args.image_size, 8),
                             ("--start-epoch", args.start_epoch, 0)):
        _int(flag, value, low)
    _number("--lr", args.lr, strict=True)
    _number("--grad-clip", args.grad_clip, strict=True)
    _number("--label-smoothing", args.label_smoothing, high=1.0)
    for flag, value in (("--momentum", args.momentum), ("--wd", args.wd),
                        ("--eta-min", args.eta_min), ("--warmup-epochs", args.warmup_epochs)):
        _number(flag, value)
    if args.warmup_epochs > args.epochs:
        raise UsageError(f"--warmup-epochs ({args.warmup_epochs}) must not be longer than "
                         f"training (--epochs {args.epochs})")
    if not args.resume and args.start_epoch >= args.epochs:
        raise UsageError(f"--start-epoch ({args.start_epoch}) must be below --epochs "
                         f"({args.epochs})")
    if args.customize and args.convert:
        raise UsageError("give --customize (the KernelDNA layout) or --convert (convert the "
                         "plain model), not both")
    if args.share and not args.convert:
        raise UsageError("--share chooses how --convert converts; give --convert too")
    if args.evaluate and not args.resume:
        raise UsageError("evaluating needs --resume CHECKPOINT")
    if args.data is None and not args.dummy and not args.resume:
        raise UsageError("give --data PATH_OR_NAME, or --dummy for a synthetic set")
    _data(args.data)
    _resume(args.resume)
    cuda_backend = args.dist_backend == "nccl" or args.multiprocessing_distributed
    if cuda_backend and not torch.cuda.is_available():
        raise UsageError("--dist-backend nccl and --multiprocessing-distributed need CUDA, and "
                         "no CUDA device is available (use --dist-backend gloo on CPUs)")
    if not args.evaluate:
        for flag, folder in (("--ckpt_dir", args.ckpt_dir), ("--log_dir", args.log_dir)):
            _writable(flag, folder)


def _writable(flag: str, folder: str | None) -> None:
    try:
        if folder:
            check_writable(folder)
    except OSError as exc:
        raise UsageError(f"{flag}: {exc}") from None


def check_finetune_args(args: argparse.Namespace) -> None:
    """``kdna finetune``: the network, the data, counts and sizes, the output folder."""
    _arch(args.arch)
    for flag, value, low in (("-b/--batch-size", args.batch_size, 1), ("--steps", args.steps, 1),
                             ("--epochs", args.epochs, 1), ("--limit", args.limit, 1),
                             ("--image-size", args.image_size, 8)):
        _int(flag, value, low)
    _data(args.data)
    if args.device is not None and args.device.startswith("cuda") and (
            not torch.cuda.is_available()):
        raise UsageError(f"--device {args.device}: no CUDA device is available")
    _writable("--out", args.out)


def check_metrics_args(args: argparse.Namespace) -> None:
    """``kdna metrics``: sizes, counts, threads, the device."""
    _arch(args.arch)
    for flag, value, low in (("-b/--batch-size", args.batch_size, 1),
                             ("--image-size", args.image_size, 8), ("--iter", args.iter, 1),
                             ("--warmup", args.warmup, 0), ("--num-threads", args.num_threads, 1)):
        _int(flag, value, low)
    if args.gpu and not torch.cuda.is_available():
        raise UsageError("--gpu given but no CUDA device is available")


def check_demo_args(args: argparse.Namespace) -> None:
    """``kdna demo``: counts and sizes; the output folder writable."""
    for flag, value, low in (("--steps", args.steps, 1), ("--image-size", args.image_size, 8)):
        _int(flag, value, low)
    _writable("--out", args.out)
