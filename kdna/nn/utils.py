"""Small model utilities that every part of kdna needs, written once.

Finding a model's KernelDNA children, swapping a submodule by name, counting parameters,
finding the device a model lives on, naming its classifier head, and running it in eval mode
for a while. Also :func:`device_description`, the words every measured number travels with.
"""

from __future__ import annotations

import contextlib
import itertools
import platform
from collections.abc import Iterator

import torch
from torch import nn

from kdna.nn.conv import KernelChild

__all__ = ["children_of", "count_parameters", "default_device", "device_description", "device_of",
           "eval_mode", "head_name", "replace_module"]


def children_of(model: nn.Module, *, verb: str = "use", gated: bool = False
                ) -> dict[str, KernelChild]:
    """``name -> child`` for every KernelDNA child of ``model`` (with a gate, if ``gated``).

    Raises a ``ValueError`` that says "convert it first" when there is none; ``verb`` names
    what the caller wanted to do with them ("fold", "fine-tune", ...).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    children = {name: m for name, m in model.named_modules() if isinstance(m, KernelChild)
                and (not gated or m.gate is not None)}
    if not children:
        raise ValueError(
            f"{type(model).__name__} has no KernelDNA children{' with a gate' if gated else ''}"
            f"; convert it first (kdna.convert) or build it from kdna.nn modules, to {verb} "
            "its ChildConv2d / ChildLinear layers")
    return children


def replace_module(model: nn.Module, name: str, new: nn.Module) -> nn.Module:
    """Put ``new`` where the submodule ``name`` ("layer1.0.conv2") is; returns the old one."""
    container, _, attr = name.rpartition(".")
    parent = model.get_submodule(container)
    old = getattr(parent, attr)
    setattr(parent, attr, new)
    return old


def count_parameters(model: nn.Module, *, trainable: bool = False) -> int:
    """Parameters of ``model``, each shared tensor counted once (only trainable ones, if asked)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable)


def default_device(device: torch.device | str | None = None) -> torch.device:
    """``device`` as a ``torch.device``; by default CUDA when there is a GPU, else the CPU."""
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def device_of(model: nn.Module) -> torch.device:
    """Where ``model``'s first parameter (or buffer) lives; the CPU for a model with neither."""
    return next(itertools.chain(model.parameters(), model.buffers()), torch.empty(0)).device


def head_name(model: nn.Module) -> str:
    """The name of ``model``'s classifier head: its last ``nn.Linear``."""
    linears = [n for n, m in model.named_modules() if type(m) is nn.Linear]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear to use as the classifier "
                         "head; pass head=<module name>, or head=None for none")
    return linears[-1]


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode for the duration, then every module back in the mode it was in."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for module, training in modes.items():
            module.training = training


def device_description(device: str | torch.device = "cpu") -> str:
    """The processor and torch's thread count (CPU), or the GPU's name."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as info:
            names = [line.split(":", 1)[1].strip() for line in info
                     if line.startswith("model name")]
        model = names[0] if names else model
    return f"{model}, {torch.get_num_threads()} threads"
