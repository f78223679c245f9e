"""``kdna train / eval / metrics / demo``: the reference code's command line, done right.

The reference flags work as before (``--data --ckpt_dir --log_dir --arch --customize
--pretrained --epochs --warmup-epochs --start-epoch -b --lr --momentum --wd --eta-min -j
--seed --resume -e --dummy`` and the distributed ones), each in its hyphen and underscore
spelling. New: ``--convert`` (convert a pretrained model with :func:`kdna.convert`),
``--adapters-only`` (train only what KernelDNA added, norms and head), ``--image-size``,
``--optimizer``, ``--label-smoothing``, ``--max-steps``, ``--limit``. Everything is written
under ``./runs/`` unless told otherwise. ``kdna metrics`` lives in :mod:`kdna.cli.metrics`;
``kdna check-data PATH`` lists the unreadable images of a folder.

Every flag is checked before any data is read (:mod:`kdna.cli.validate`); a user's mistake is
one line ``kdna: error: ...`` and status 2, Ctrl-C saves and prints the resume command
(:mod:`kdna.cli.errors`); ``--debug`` or ``KDNA_DEBUG=1`` shows tracebacks.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdna.cli import metrics
from kdna.cli.errors import Parser, UsageError, guarded
from kdna.cli.validate import check_demo_args, check_metrics_args, check_train_args
from kdna.conversion.config import ConvertConfig
from kdna.conversion.convert import convert
from kdna.conversion.freeze import adapter_only
from kdna.data.classification import IMAGENET_MEAN, IMAGENET_STD, load_data
from kdna.data.imagefiles import scan_images
from kdna.models import create_model, efficientnet_lite, list_models
from kdna.nn.utils import count_parameters
from kdna.train import distributed
from kdna.train.checkpoint import load_checkpoint
from kdna.train.evaluate import evaluate
from kdna.train.loop import TrainConfig, fit

__all__ = ["build_model", "main", "parser"]



def _add(group: argparse._ActionsContainer, *names: str, **kwargs: Any) -> None:
    """Add an option under every given name plus its hyphen/underscore twin."""
    spelled = []
    for name in names:
        spelled.append(name)
        if name.startswith("--"):
            twin = "--" + (name[2:].replace("-", "_") if "-" in name[2:]
                           else name[2:].replace("_", "-"))
            if twin != name:
                spelled.append(twin)
    group.add_argument(*dict.fromkeys(spelled), **kwargs)


def _model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    _add(g, "-a", "--arch", default="resnet18", help=f"one of {', '.join(list_models())}")
    _add(g, "--customize", action="store_true", help="the KernelDNA layout of --arch")
    _add(g, "--pretrained", action="store_true",
         help="start from ImageNet weights (efficientnet_lite0: offline)")
    _add(g, "--convert", action="store_true", help="convert the model with kdna.convert")
    _add(g, "--adapters-only", action="store_true",
         help="train only adapters, norms and the head (kdna.adapter_only)")


def _data_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    _add(g, "--data", default=None, help="an ImageFolder path (train/ and val/) or a data set "
         "name: mnist, digits, faces, synthetic (offline), cifar10, flowers102, pets (online)")
    _add(g, "--dummy", action="store_true", help="a small synthetic data set (smoke test)")
    _add(g, "--image-size", type=int, default=None, help="input size (default 224; 64 dummy)")
    _add(g, "--limit", type=int, default=None, help="at most this many samples per split")
    _add(g, "-j", "--workers", type=int, default=None,
         help="data loading workers (default: 0 on a CPU, min(4, CPUs - 1) on CUDA)")
    _add(g, "-b", "--batch-size", type=int, default=256)
    _add(g, "--bad-images", choices=("error", "skip"), default="error",
         help="an unreadable image in a folder: stop with its path (error) or leave it out")
    _add(g, "--seed", type=int, default=0)


def _train_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training")
    _add(g, "--epochs", type=int, default=90)
    _add(g, "--warmup-epochs", type=float, default=0.0)
    _add(g, "--start-epoch", type=int, default=0, help="first epoch (ignored with --resume)")
    _add(g, "--lr", "--learning-rate", type=float, default=0.1)
    _add(g, "--momentum", type=float, default=0.9)
    _add(g, "--wd", "--weight-decay", type=float, default=1e-4)
    _add(g, "--eta-min", type=float, default=0.0)
    _add(g, "--optimizer", choices=("sgd", "adamw"), default="sgd")
    _add(g, "--label-smoothing", type=float, default=0.0)
    _add(g, "--grad-clip", type=float, default=None)
    _add(g, "--max-steps", type=int, default=None, help="stop after this many steps")
    _add(g, "--checkpoint-every", type=int, default=None, help="also checkpoint every N steps")
    _add(g, "--amp", action=argparse.BooleanOptionalAction, default=None,
         help="mixed precision (default: on with CUDA)")
    _add(g, "--ckpt_dir", default="runs/train", help="checkpoints (last.pt, best.pt)")
    _add(g, "--log_dir", default=None, help="metrics.csv and TensorBoard (default: ckpt_dir)")
    _add(g, "--resume", default=None, help="a checkpoint to resume from (or evaluate)")
    _add(g, "-e", "--evaluate", action="store_true", help="only evaluate --resume's model")
    _add(g, "--no-progress", action="store_true", help="no progress bars")
    d = p.add_argument_group("distributed (prefer: torchrun --nproc_per_node N -m kdna train)")
    _add(d, "--world-size", type=int, default=None)
    _add(d, "--rank", type=int, default=None)
    _add(d, "--dist-url", default=None)
    _add(d, "--dist-backend", default=None)
    _add(d, "--multiprocessing-distributed", action="store_true",
         help="one process per GPU on this node (reference style)")


def parser() -> argparse.ArgumentParser:
    """The ``kdna`` argument parser (``train``, ``eval``, ``metrics``, ``demo``)."""
    p = Parser(prog="kdna", description=__doc__.split("\n\n")[0])
    debug = Parser(add_help=False)
    debug.add_argument("--debug", action="store_true",
                       help="show the traceback of an error (also: KDNA_DEBUG=1)")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser = functools.partial(sub.add_parser, parents=[debug])
    for name, text in (("train", "train or fine-tune a model"),
                       ("eval", "evaluate a checkpoint (--resume)")):
        s = sub.add_parser(name, help=text)
        _model_options(s)
        _data_options(s)
        _train_options(s)
    metrics.configure(sub.add_parser(
        "metrics", help="parameters, MACs, latency, throughput; --compare for the speed table"),
        _add)
    demo = sub.add_parser("demo", help="the main job offline: KernelDNA adapters on the "
                          "pretrained EfficientNet-Lite0, beside norms + head, on MNIST; report")
    _add(demo, "--out", default="runs/demo")
    _add(demo, "--epochs", type=int, default=None,
         help="passes over the training split (default: the benchmark protocol's steps)")
    _add(demo, "--image-size", type=int, default=None,
         help="input size (default: the benchmark protocol's, 32)")
    _add(demo, "--limit", type=int, default=None, help="at most this many samples per split")
    _add(demo, "--no-progress", action="store_true")
    check = sub.add_parser("check-data", help="read every image of a folder once and list "
                           "the unreadable ones (status 1 if there are any)")
    check.add_argument("path", help="an ImageFolder folder")
    _add(check, "--no-progress", action="store_true")
    return p


def build_model(arch: str, *, num_classes: int, customize: bool = False,
                pretrained: bool = False, do_convert: bool = False,
                image_size: int = 224, layout: dict | None = None) -> tuple[nn.Module, dict]:
    """The model the flags describe, and the plain values needed to build it again."""
    if customize and do_convert:
        raise UsageError("give --customize (the KernelDNA layout) or --convert (convert the "
                         "plain model), not both")
    weights = ("imagenet" if "lite" in arch.lower() else "DEFAULT") if pretrained else None
    model = create_model(arch, kernel_dna=customize, weights=weights, num_classes=num_classes)
    if do_convert:
        config = ConvertConfig.pretrained()  # --convert converts the (pretrained) model
        if layout is None:  # first build: the automatic rule; rebuilds reuse its layout
            probe = torch.zeros(1, 3, image_size, image_size)
            layout = convert(model, config, example_inputs=probe).layout
        else:
            convert(model, config, groups=layout)
    meta = {"arch": arch, "customize": customize, "convert": do_convert, "layout": layout,
            "num_classes": num_classes, "image_size": image_size}
    return model, meta


def _data(args: argparse.Namespace, arch: str, meta: dict):
    """The data the flags name; a resumed or evaluated checkpoint defaults to its own."""
    # EfficientNet-Lite0's shipped weights expect inputs in [-1, 1]; torchvision's, ImageNet's.
    lite = "lite" in arch.lower()
    mean = efficientnet_lite.MEAN if lite else IMAGENET_MEAN
    std = efficientnet_lite.STD if lite else IMAGENET_STD
    source = "synthetic" if args.dummy else (args.data or meta.get("data"))
    if source is None:
        raise UsageError("give --data PATH_OR_NAME, or --dummy for a synthetic set")
    size = args.image_size or meta.get("image_size") or (64 if source == "synthetic" else 224)
    seed = meta.get("seed", args.seed) if args.data is None and not args.dummy else args.seed
    limit = args.limit if args.limit is not None else meta.get("limit")
    splits = load_data(source, image_size=size, mean=mean, std=std, seed=seed, limit=limit,
                       bad_images=args.bad_images)
    return splits, {"data": source, "image_size": size, "seed": seed, "limit": limit}


def _train(args: argparse.Namespace, ctx: distributed.Context) -> dict:
    state = load_checkpoint(args.resume) if args.resume else None
    meta = state["meta"] if state else {}
    arch = meta.get("arch", args.arch)
    data, data_meta = _data(args, arch, meta)
    model, meta = build_model(
        arch, num_classes=data.num_classes, customize=meta.get("customize", args.customize),
        pretrained=args.pretrained and state is None,
        do_convert=meta.get("convert", args.convert), image_size=data_meta["image_size"],
        layout=meta.get("layout"))
    adapters = meta.get("adapters_only", args.adapters_only)  # a resumed run keeps its setting
    trainable = adapter_only(model) if adapters else None
    meta |= data_meta | {"adapters_only": adapters}
    if args.evaluate:
        if state is None:
            raise UsageError("--evaluate needs --resume CHECKPOINT")
        model.load_state_dict(state["model"])
        metrics = evaluate(model.to(ctx.device), data.val, batch_size=args.batch_size,
                           workers=args.workers, progress=not args.no_progress)
        # Accuracies here and in the training summary are fractions in [0, 1], as in Metrics.
        return {"val_loss": metrics.loss, "val_top1": metrics.top1, "val_top5": metrics.top5,
                "samples": metrics.samples}
    config = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
        momentum=args.momentum, weight_decay=args.wd, warmup_epochs=args.warmup_epochs,
        eta_min=args.eta_min, label_smoothing=args.label_smoothing, grad_clip=args.grad_clip,
        amp=args.amp, workers=args.workers, seed=args.seed, max_steps=args.max_steps,
        checkpoint_every=args.checkpoint_every, start_epoch=args.start_epoch,
        out_dir=args.ckpt_dir, log_dir=args.log_dir, progress=not args.no_progress)
    result = fit(model, data.train, data.val, config, device=ctx.device, resume=args.resume,
                 meta=meta)
    summary = {"best_top1": result.best_top1, "steps": result.steps,  # accuracies: fractions
               "seconds": round(result.seconds, 1), "parameters": count_parameters(model),
               "last_checkpoint": str(result.last_checkpoint)}
    if trainable is not None:
        summary["trainable"] = trainable.trainable
    if result.history:
        summary |= {k: v for k, v in result.history[-1].items() if k.startswith("val_")}
    return summary


def _worker(index: int, args: argparse.Namespace, per_node: int) -> None:
    ctx = distributed.setup(backend=args.dist_backend, init_method=args.dist_url,
                            rank=(args.rank or 0) * per_node + index,
                            world_size=(args.world_size or 1) * per_node, local_rank=index)
    try:
        _report(_train(args, ctx), ctx)
    finally:
        distributed.cleanup()


def _report(summary: dict, ctx: distributed.Context) -> None:
    if ctx.is_main:
        print(json.dumps(summary, indent=2))


def _check_data(args: argparse.Namespace) -> int:
    bad = scan_images(args.path, progress=not args.no_progress)
    for path, reason in bad:
        print(f"{path}: {reason}")
    print(f"{len(bad)} unreadable image(s) under {args.path}" if bad
          else f"every image under {args.path} is readable")
    return 1 if bad else 0


def _run(args: argparse.Namespace) -> int:
    if args.command == "check-data":
        return _check_data(args)
    if args.command == "demo":
        from kdna.cli.demo import run_demo

        check_demo_args(args)
        report = run_demo(out=Path(args.out), epochs=args.epochs, image_size=args.image_size,
                          limit=args.limit, progress=not args.no_progress)
        print(report.read_text())
        return 0
    if args.command == "metrics":
        check_metrics_args(args)
        print(metrics.run(args))
        return 0
    args.evaluate = args.evaluate or args.command == "eval"
    check_train_args(args)
    if args.multiprocessing_distributed:
        per_node = max(1, torch.cuda.device_count())
        torch.multiprocessing.spawn(_worker, args=(args, per_node), nprocs=per_node)
        return 0
    ctx = distributed.setup(backend=args.dist_backend, init_method=args.dist_url,
                            rank=args.rank, world_size=args.world_size)
    try:
        _report(_train(args, ctx), ctx)
    finally:
        distributed.cleanup()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``kdna`` with ``argv`` (default: the process's arguments); the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    return guarded(lambda: _run(args), argv, args.debug)


if __name__ == "__main__":
    sys.exit(main())
