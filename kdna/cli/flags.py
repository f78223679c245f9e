"""The flags of ``kdna train`` and ``kdna eval``: the reference code's, each in its hyphen and
underscore spelling (:func:`add_flag`), grouped as model, data and training options."""

from __future__ import annotations

import argparse
from typing import Any

from kdna.models import list_models

__all__ = ["add_flag", "data_options", "model_options", "train_options"]


def add_flag(group: argparse._ActionsContainer, *names: str, **kwargs: Any) -> None:
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


def model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    add_flag(g, "-a", "--arch", default="resnet18", help=f"one of {', '.join(list_models())}")
    add_flag(g, "--customize", action="store_true", help="the KernelDNA layout of --arch")
    add_flag(g, "--pretrained", action="store_true",
         help="start from ImageNet weights (efficientnet_lite0: offline)")
    add_flag(g, "--convert", action="store_true",
         help="KernelDNA adapters in place: each layer a child of its own kernel, so the "
         "network keeps its function exactly (kdna.ConvertConfig.adapters())")
    add_flag(g, "--share", action="store_true",
         help="with --convert: share kernels across layers instead (kdna.ConvertConfig."
         "pretrained()); this changes the network's function (see `kdna finetune` for the "
         "fine-tuning path)")
    add_flag(g, "--adapters-only", action="store_true",
         help="train only adapters, norms and the head (kdna.adapter_only)")
    add_flag(g, "--batchnorm", choices=("frozen", "train"), default=None,
         help="BatchNorm statistics while training (default: frozen with --pretrained, as "
         "`kdna finetune`; trained otherwise)")


def data_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    add_flag(g, "--data", default=None, help="an ImageFolder path (train/ and val/) or a data set "
         "name: mnist, digits, faces, synthetic (offline), cifar10, cifar100, flowers102, "
         "pets (online)")
    add_flag(g, "--dummy", action="store_true", help="a small synthetic data set (smoke test)")
    add_flag(g, "--image-size", type=int, default=None, help="input size (default 224; 64 dummy)")
    add_flag(g, "--limit", type=int, default=None, help="at most this many samples per split")
    add_flag(g, "-j", "--workers", type=int, default=None,
         help="data loading workers (default: 0 on a CPU, min(4, CPUs - 1) on CUDA)")
    add_flag(g, "-b", "--batch-size", type=int, default=None,
         help="per process (default 256; a resumed run: its own)")
    add_flag(g, "--bad-images", choices=("error", "skip"), default="error",
         help="an unreadable image in a folder: stop with its path (error) or leave it out")
    add_flag(g, "--seed", type=int, default=0)


def train_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training")
    add_flag(g, "--epochs", type=int, default=90)
    add_flag(g, "--warmup-epochs", type=float, default=0.0)
    add_flag(g, "--start-epoch", type=int, default=0, help="first epoch (ignored with --resume)")
    add_flag(g, "--lr", "--learning-rate", type=float, default=0.1)
    add_flag(g, "--momentum", type=float, default=0.9)
    add_flag(g, "--wd", "--weight-decay", type=float, default=1e-4)
    add_flag(g, "--weight-decay-on", choices=("all", "weights"), default=None,
         help="all parameters (the reference), or kernels and weight matrices only (not norms, "
         "biases, static scales or gates); default: weights with --pretrained, else all")
    add_flag(g, "--eta-min", type=float, default=0.0)
    add_flag(g, "--optimizer", choices=("sgd", "adamw"), default="sgd")
    add_flag(g, "--label-smoothing", type=float, default=0.0)
    add_flag(g, "--grad-clip", type=float, default=None)
    add_flag(g, "--max-steps", type=int, default=None, help="stop after this many steps")
    add_flag(g, "--checkpoint-every", type=int, default=None, help="also checkpoint every N steps")
    add_flag(g, "--amp", action=argparse.BooleanOptionalAction, default=None,
         help="mixed precision (default: on with CUDA)")
    add_flag(g, "--ckpt_dir", default="runs/train", help="checkpoints (last.pt, best.pt)")
    add_flag(g, "--log_dir", default=None, help="metrics.csv and TensorBoard (default: ckpt_dir)")
    add_flag(g, "--resume", default=None, help="a checkpoint to resume from (or evaluate)")
    add_flag(g, "-e", "--evaluate", action="store_true", help="only evaluate --resume's model")
    add_flag(g, "--no-progress", action="store_true", help="no progress bars")
    d = p.add_argument_group("distributed (prefer: torchrun --nproc_per_node N -m kdna train)")
    add_flag(d, "--world-size", type=int, default=None)
    add_flag(d, "--rank", type=int, default=None)
    add_flag(d, "--dist-url", default=None)
    add_flag(d, "--dist-backend", default=None)
    add_flag(d, "--multiprocessing-distributed", action="store_true",
         help="one process per GPU on this node (reference style)")
