"""``kdna finetune``, ``kdna predict`` and ``kdna eval DIR``: fine-tuning on one's own images.

``kdna finetune --data PATH_OR_NAME --arch NAME --out DIR`` calls :func:`kdna.finetune` and
writes ``DIR/adapters/`` (the task file), ``DIR/metrics.json``, ``DIR/report.md`` and
``DIR/confusion.svg``; ``--baseline METHOD`` trains a second method at the same budget beside
it, for the report. Run again after Ctrl-C, the same command resumes where it stopped
(checkpoints under ``DIR/checkpoints/``). ``kdna predict DIR IMAGE...`` loads the base and the
task file and prints each image's top classes; ``kdna eval DIR --data ...`` evaluates the
fine-tuned network on a data set.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kdna.cli.errors import UsageError
from kdna.data import load_data
from kdna.finetune import default_lr, default_method, finetune, list_methods, load_task
from kdna.finetune.report import write_report
from kdna.finetune.task import TASK_FILE
from kdna.models import list_models
from kdna.train.evaluate import evaluate

__all__ = ["configure_eval_dir", "configure_finetune", "configure_predict", "predictions",
           "run_eval_dir", "run_finetune", "run_predict", "task_folder"]

Add = Callable[..., None]


def configure_finetune(p: argparse.ArgumentParser, add: Add) -> None:
    """The flags of ``kdna finetune``."""
    add(p, "--data", required=True, help="a folder of images (<class>/..., or train/ with val/ "
        "and/or test/) or a data set name: mnist, digits, faces (offline), cifar10, "
        "cifar100, flowers102, pets (online)")
    add(p, "-a", "--arch", default="efficientnet_lite0",
        help=f"the pretrained network, one of {', '.join(list_models())} (default "
        f"efficientnet_lite0: its ImageNet weights ship with pip, offline)")
    add(p, "--method", default=None, choices=list_methods(),
        help=f"what to train (default {default_method()}, the best KernelDNA in-place method "
        f"of the committed benchmark)")
    add(p, "--image-size", type=int, default=None,
        help="input size (default: what the pretrained weights expect, e.g. 224)")
    budget = p.add_mutually_exclusive_group()
    add(budget, "--steps", type=int, default=None,
        help="optimizer steps (default: the committed protocol's, 120)")
    add(budget, "--epochs", type=int, default=None, help="passes over the training split")
    add(p, "--lr", default=None, help="a learning rate, or 'search' to choose one on the "
        "validation split from the grid (default: the rate the committed protocol chose)")
    add(p, "-b", "--batch-size", type=int, default=16)
    add(p, "--baseline", default=None, choices=list_methods(),
        help="also train this method at the same budget, for the report (e.g. norms_head)")
    add(p, "--no-flip", action="store_true",
        help="never flip training images horizontally (digits, text, anything whose mirror "
        "image is another class)")
    add(p, "--limit", type=int, default=None, help="at most this many images per split")
    add(p, "--seed", type=int, default=0)
    add(p, "--out", default="runs/finetune", help="where the task file and report go")
    add(p, "--device", default=None, help="cpu, cuda or cuda:N (default: CUDA if present)")
    add(p, "--no-progress", action="store_true")


def configure_predict(p: argparse.ArgumentParser, add: Add) -> None:
    """The arguments of ``kdna predict``."""
    p.add_argument("folder", help="a `kdna finetune --out` folder (or its adapters/ folder)")
    p.add_argument("images", nargs="+", help="image files")
    add(p, "--topk", type=int, default=3, help="how many classes to show per image")
    add(p, "--json", action="store_true", help="print JSON instead of text")
    add(p, "--device", default=None)


def configure_eval_dir(p: argparse.ArgumentParser) -> None:
    """``kdna eval``'s optional fine-tuned folder (the reference flags stay as they are)."""
    p.add_argument("folder", nargs="?", default=None,
                   help="a `kdna finetune --out` folder to evaluate on --data (without it: "
                   "evaluate --resume's checkpoint, as the reference code)")


def task_folder(path: str) -> Path:
    """The task folder of ``path``: itself, or its ``adapters/``."""
    folder = Path(path).expanduser()
    for candidate in (folder, folder / "adapters"):
        if (candidate / TASK_FILE).is_file():
            return candidate
    raise UsageError(f"{path!r} holds no fine-tuned task ({TASK_FILE}): give the --out folder "
                     f"of `kdna finetune`, or the adapters/ folder inside it")


def _lr(value: str | None) -> float | str | None:
    if value is None or value == "search":
        return value
    try:
        lr = float(value)
    except ValueError:
        raise UsageError(f"--lr must be a positive number or 'search', got {value!r}") from None
    if not lr > 0:
        raise UsageError(f"--lr must be a positive number or 'search', got {value!r}")
    return lr


def _lr_source(lr: float | str | None, method: str, data: str) -> str:
    if lr is None:
        return (f"the rate the committed benchmark's protocol chose for this method "
                f"(kdna.finetune.default_lr({method!r}, {data!r}) = "
                f"{default_lr(method, data):g})")
    return "given with --lr"


def run_finetune(args: argparse.Namespace) -> dict[str, Any]:
    """``kdna finetune``: train, save the task, write the report; the summary printed."""
    lr = _lr(args.lr)
    out = Path(args.out)
    common = {"image_size": args.image_size, "steps": args.steps, "epochs": args.epochs,
              "batch_size": args.batch_size, "limit": args.limit, "seed": args.seed,
              "device": args.device, "out": out, "progress": not args.no_progress,
              "flip": False if args.no_flip else None}
    result = finetune(args.arch, args.data, method=args.method, lr=lr, **common)
    baseline = None
    if args.baseline is not None:
        baseline = finetune(args.arch, args.data, method=args.baseline, **common)
    folder = result.save(out / "adapters")
    report = write_report(result, out, task_folder=folder, baseline=baseline,
                          lr_source=_lr_source(lr, result.method.name, result.data or ""))
    summary = {"method": result.method.name, "lr": result.lr, "steps": result.steps,
               "val_top1": result.val.top1,
               "test_top1": None if result.test is None else result.test.top1,
               "task": str(folder), "report": str(report)}
    if result.test is None:
        summary["note"] = f"no test split: {result.sources.get('test', '')}"
    if baseline is not None:
        summary["baseline"] = {"method": baseline.method.name,
                               "test_top1": None if baseline.test is None
                               else baseline.test.top1, "val_top1": baseline.val.top1}
    return summary


def predictions(args: argparse.Namespace) -> list[list[tuple[str, float]]]:
    """Each of ``args.images``' top ``args.topk`` classes and probabilities."""
    if args.topk < 1:
        raise UsageError(f"--topk must be a positive integer, got {args.topk}")
    for image in args.images:
        if not Path(image).is_file():
            raise UsageError(f"no such image file: {image!r}")
    return load_task(task_folder(args.folder), device=args.device).predict(args.images,
                                                                           topk=args.topk)


def run_predict(args: argparse.Namespace) -> str:
    """``kdna predict``: each image's top classes, as text or JSON."""
    found = predictions(args)
    pairs = zip(args.images, found, strict=True)
    if args.json:
        return json.dumps([{"image": image, "top": [{"class": c, "probability": p}
                                                    for c, p in top]} for image, top in pairs],
                          indent=2)
    return "\n".join(f"{image}: " + ", ".join(f"{c} {100 * p:.1f}%" for c, p in top)
                     for image, top in pairs)


def run_eval_dir(args: argparse.Namespace) -> dict[str, Any]:
    """``kdna eval DIR --data ...``: the fine-tuned network on the data's test split (or its
    validation split where it has no test split)."""
    if args.data is None:
        raise UsageError("kdna eval DIR needs --data PATH_OR_NAME to evaluate on")
    task = load_task(task_folder(args.folder))
    meta = task.meta
    data = load_data(args.data, image_size=meta["image_size"], mean=meta["mean"],
                     std=meta["std"], augment=False, limit=args.limit, seed=args.seed,
                     bad_images=args.bad_images)
    if list(data.classes) != task.classes:
        raise UsageError(f"--data {args.data!r} has the classes {list(data.classes)}, but the "
                         f"task in {args.folder!r} was fine-tuned on {task.classes}")
    split, dataset = ("test", data.test) if data.test is not None else ("val", data.val)
    metrics = evaluate(task.model, dataset, batch_size=args.batch_size or 256, workers=args.workers,
                       progress=not args.no_progress, confusion=True)
    return {"split": split, "source": data.sources.get(split, ""), "samples": metrics.samples,
            "top1": metrics.top1, "top5": metrics.top5, "loss": metrics.loss,
            "per_class_top1": dict(zip(task.classes, metrics.per_class(), strict=True))}
