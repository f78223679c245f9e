"""``kdna train / eval / metrics / demo``: the reference code's command line, done right.

The reference code's flags mean what they mean there (``--data --ckpt_dir --log_dir --arch
--customize --pretrained --epochs --warmup-epochs --start-epoch -b --lr --momentum --wd
--eta-min -j --seed --resume -e --dummy`` and the distributed ones), each in its hyphen and
underscore spelling, so its commands run unchanged. Beyond them: ``--convert`` (convert a
pretrained model with :func:`kdna.convert`), ``--adapters-only`` (train only what KernelDNA
added, norms and head), ``--image-size``, ``--optimizer``, ``--label-smoothing``,
``--max-steps``, ``--limit``. Everything is written
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

from kdna.cli import demo, finetune, metrics
from kdna.cli.errors import Parser, UsageError, guarded
from kdna.cli.flags import add_flag, data_options, model_options, train_options
from kdna.cli.validate import (
    check_demo_args,
    check_finetune_args,
    check_metrics_args,
    check_train_args,
)
from kdna.conversion.config import ConvertConfig
from kdna.conversion.convert import convert
from kdna.conversion.trainable import adapter_only
from kdna.data import load_data
from kdna.data.imagefiles import scan_images
from kdna.models import create_model, pretrained_config
from kdna.nn.norm import freeze_batchnorm
from kdna.nn.utils import count_parameters
from kdna.train import distributed
from kdna.train.checkpoint import load_checkpoint
from kdna.train.evaluate import evaluate
from kdna.train.loop import TrainConfig, train_classifier

__all__ = ["build_model", "main", "parser"]



def parser() -> argparse.ArgumentParser:
    """The ``kdna`` argument parser (``train``, ``eval``, ``metrics``, ``demo``)."""
    p = Parser(prog="kdna", description=__doc__.split("\n\n")[0])
    debug = Parser(add_help=False)
    debug.add_argument("--debug", action="store_true",
                       help="show the traceback of an error (also: KDNA_DEBUG=1)")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser = functools.partial(sub.add_parser, parents=[debug])
    tune = sub.add_parser("finetune", help="fine-tune a pretrained network on your images: "
                          "the task file, a report, the confusion matrix")
    finetune.configure_finetune(tune, add_flag)
    finetune.configure_predict(sub.add_parser(
        "predict", help="the top classes of image files, from a `kdna finetune` folder"), add_flag)
    for name, text in (("train", "train a model (the reference code's flags)"),
                       ("eval", "evaluate a checkpoint (--resume), or a `kdna finetune` "
                        "folder on --data")):
        s = sub.add_parser(name, help=text)
        if name == "eval":
            finetune.configure_eval_dir(s)
        model_options(s)
        data_options(s)
        train_options(s)
    metrics.configure(sub.add_parser(
        "metrics", help="parameters, MACs, latency, throughput; --compare for the speed table"),
        add_flag)
    demo.configure(sub.add_parser(
        "demo", help="the main job offline: `kdna finetune` on a folder of real digits "
        "(EfficientNet-Lite0, KernelDNA adapters beside norms + head), then `kdna predict`"))
    check = sub.add_parser("check-data", help="read every image of a folder once and list "
                           "the unreadable ones (status 1 if there are any)")
    check.add_argument("path", help="an ImageFolder folder")
    add_flag(check, "--no-progress", action="store_true")
    return p


def build_model(arch: str, *, num_classes: int, customize: bool = False,
                pretrained: bool = False, do_convert: bool = False, share: bool = False,
                image_size: int = 224, layout: dict | None = None) -> tuple[nn.Module, dict]:
    """The model the flags describe, and the plain values needed to build it again."""
    if customize and do_convert:
        raise UsageError("give --customize (the KernelDNA layout) or --convert (convert the "
                         "plain model), not both")
    if share and not do_convert:
        raise UsageError("--share chooses how --convert converts; give --convert too")
    weights = pretrained_config(arch).weights if pretrained else None
    if pretrained and weights is None:
        raise UsageError(f"--pretrained: {arch!r} has no pretrained weights in kdna")
    model = create_model(arch, kernel_dna=customize, weights=weights, num_classes=num_classes)
    if do_convert:
        # adapters in place keep the function; sharing changes it, and its layout is kept so
        # that a resumed or evaluated run rebuilds the same network
        example_inputs = torch.zeros(2, 3, image_size, image_size)
        if not share:
            convert(model, ConvertConfig.adapters(), example_inputs=example_inputs)
        elif layout is None:
            layout = convert(model, ConvertConfig.pretrained(),
                             example_inputs=example_inputs).layout
        else:
            convert(model, ConvertConfig.pretrained(), groups=layout)
    meta = {"arch": arch, "customize": customize, "convert": do_convert, "share": share,
            "layout": layout, "num_classes": num_classes, "image_size": image_size}
    return model, meta


def _data(args: argparse.Namespace, arch: str, meta: dict):
    """The data the flags name, normalised as ``arch``'s pretrained weights expect; a resumed
    or evaluated checkpoint defaults to its own data, size, seed and limit."""
    config = pretrained_config(arch)
    source = "synthetic" if args.dummy else (args.data or meta.get("data"))
    if source is None:
        raise UsageError("give --data PATH_OR_NAME, or --dummy for a synthetic set")
    size = args.image_size or meta.get("image_size") or (64 if source == "synthetic" else 224)
    seed = meta.get("seed", args.seed) if args.data is None and not args.dummy else args.seed
    limit = args.limit if args.limit is not None else meta.get("limit")
    splits = load_data(source, image_size=size, mean=config.mean, std=config.std, seed=seed,
                       limit=limit, bad_images=args.bad_images)
    return splits, {"data": source, "image_size": size, "seed": seed, "limit": limit}


def _settings(args: argparse.Namespace, state: dict | None) -> dict[str, Any]:
    """The settings a resumed run keeps from its checkpoint (flags given now still win for
    the batch size); otherwise the flags', with fine-tuning defaults under --pretrained."""
    meta = state["meta"] if state else {}
    saved = state["config"] if state else {}
    pretrained = meta.get("pretrained", args.pretrained)
    return {
        "arch": meta.get("arch", args.arch), "customize": meta.get("customize", args.customize),
        "convert": meta.get("convert", args.convert), "share": meta.get("share", args.share),
        "adapters_only": meta.get("adapters_only", args.adapters_only),
        "pretrained": pretrained, "layout": meta.get("layout"),
        "batch_size": args.batch_size or saved.get("batch_size", 256),
        "batchnorm": meta.get("batchnorm") or args.batchnorm or (
            "frozen" if pretrained else "train"),
        "weight_decay_on": saved.get("weight_decay_on") or args.weight_decay_on or (
            "weights" if pretrained else "all")}


def _train(args: argparse.Namespace, ctx: distributed.Context) -> dict:
    state = load_checkpoint(args.resume) if args.resume else None
    run = _settings(args, state)
    data, data_meta = _data(args, run["arch"], state["meta"] if state else {})
    model, meta = build_model(
        run["arch"], num_classes=data.num_classes, customize=run["customize"],
        pretrained=run["pretrained"] and state is None, do_convert=run["convert"],
        share=run["share"], image_size=data_meta["image_size"], layout=run["layout"])
    trainable = adapter_only(model) if run["adapters_only"] else None
    if run["batchnorm"] == "frozen":
        freeze_batchnorm(model)
    meta |= data_meta | {key: run[key] for key in ("adapters_only", "pretrained", "batchnorm")}
    if args.evaluate:
        model.load_state_dict(state["model"])
        metrics = evaluate(model.to(ctx.device), data.val, batch_size=run["batch_size"],
                           workers=args.workers, progress=not args.no_progress)
        # Accuracies here and in the training summary are fractions in [0, 1], as in Metrics.
        return {"val_loss": metrics.loss, "val_top1": metrics.top1, "val_top5": metrics.top5,
                "samples": metrics.samples}
    config = TrainConfig(
        epochs=args.epochs, batch_size=run["batch_size"], optimizer=args.optimizer, lr=args.lr,
        momentum=args.momentum, weight_decay=args.wd, weight_decay_on=run["weight_decay_on"],
        warmup_epochs=args.warmup_epochs, eta_min=args.eta_min,
        label_smoothing=args.label_smoothing, grad_clip=args.grad_clip, amp=args.amp,
        workers=args.workers, seed=args.seed, max_steps=args.max_steps,
        checkpoint_every=args.checkpoint_every, start_epoch=args.start_epoch,
        out_dir=args.ckpt_dir, log_dir=args.log_dir, progress=not args.no_progress)
    result = train_classifier(model, data.train, data.val, config, device=ctx.device,
                              resume=args.resume, meta=meta)
    summary = {"best_top1": result.best_top1, "steps": result.steps,  # accuracies: fractions
               "seconds": round(result.seconds, 1), "parameters": count_parameters(model),
               "last_checkpoint": str(result.last_checkpoint)}
    if trainable is not None:
        summary["trainable"] = trainable.trainable
    if run["share"]:
        summary["note"] = ("--share: kernels are shared across layers, which changed the "
                           "pretrained network's function; adapters in place (--convert "
                           "alone) keep it")
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
        check_demo_args(args)
        print(demo.run_demo(out=Path(args.out), steps=args.steps, image_size=args.image_size,
                            progress=not args.no_progress))
        return 0
    if args.command == "metrics":
        check_metrics_args(args)
        print(metrics.run(args))
        return 0
    if args.command == "finetune":
        check_finetune_args(args)
        print(json.dumps(finetune.run_finetune(args), indent=2))
        return 0
    if args.command == "predict":
        print(finetune.run_predict(args))
        return 0
    if args.command == "eval" and args.folder is not None:
        print(json.dumps(finetune.run_eval_dir(args), indent=2))
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
