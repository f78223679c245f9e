"""Finding a model's layers by name, and running it with forward hooks that always come off.

Shared by :mod:`kdna.analysis.similarity` and :mod:`kdna.analysis.routing`.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from kdna.nn.conv import KernelChild
from kdna.nn.utils import device_of, eval_mode

__all__ = ["detached_output", "hooked", "input_batches", "named_layers", "resolve_layers"]


def named_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every submodule once, in model order. A parent that children borrow is named by its own
    place in the model (``layer3.1.conv2``) when it has one, not as ``<child>.parent``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    entries = list(model.named_modules(remove_duplicate=False))
    borrowed = tuple(f"{n}.parent" if n else "parent" for n, m in entries
                     if isinstance(m, KernelChild))
    chosen: dict[int, tuple[int, str, bool, nn.Module]] = {}
    for index, (name, module) in enumerate(entries):
        if not name:
            continue
        via_child = any(name == b or name.startswith(b + ".") for b in borrowed)
        current = chosen.get(id(module))
        if current is None or (current[2] and not via_child):
            chosen[id(module)] = (index, name, via_child, module)
    return {name: module for _, name, _, module in sorted(chosen.values(), key=lambda c: c[0])}


def resolve_layers(model: nn.Module, layers: Sequence[str] | None,
                   default: Callable[[nn.Module], bool] | None) -> dict[str, nn.Module]:
    """``name -> module`` for the named ``layers``, or for every module ``default`` accepts
    when ``layers`` is ``None``; a ``ValueError`` with close names for an unknown one."""
    named = named_layers(model)
    if layers is None and default is not None:
        return {n: m for n, m in named.items() if default(m)}
    if isinstance(layers, str) or not isinstance(layers, Sequence):
        raise TypeError(f"layers must be a list of module names, got {layers!r}")
    resolved: dict[str, nn.Module] = {}
    for name in layers:
        if name in resolved:
            raise ValueError(f"layer {name!r} is named twice in layers")
        try:
            resolved[name] = named[name] if name in named else model.get_submodule(name)
        except (AttributeError, TypeError):
            few = difflib.get_close_matches(str(name), list(named), n=5, cutoff=0.5)
            raise ValueError(f"{name!r} is not a module of {type(model).__name__}; valid names "
                             f"include {few or list(named)[:5]}") from None
    if not resolved:
        raise ValueError("layers is empty; name at least one module")
    return resolved


@contextmanager
def hooked(model: nn.Module, modules: dict[str, nn.Module],
           record: Callable[[str, nn.Module, Tensor], None]) -> Iterator[torch.device]:
    """Eval mode, no grad, a forward hook on each of ``modules``; all undone on exit."""
    handles = []
    try:
        for name, module in modules.items():
            handles.append(module.register_forward_hook(
                lambda mod, _args, out, name=name: record(name, mod, out)))
        with eval_mode(model), torch.no_grad():
            yield device_of(model)
    finally:
        for handle in handles:
            handle.remove()


def detached_output(name: str, out: object) -> Tensor:
    """A layer's output, detached; a ``TypeError`` naming the layer if it is not a Tensor."""
    if not isinstance(out, Tensor):
        raise TypeError(f"layer {name!r} returned a {type(out).__name__}, not a Tensor")
    return out.detach()


def input_batches(inputs: object) -> Iterator[Tensor]:
    """The input batches of ``inputs``: one Tensor, or an iterable of Tensors or of a data
    loader's ``(x, y)`` (``x`` taken); a ``TypeError`` for anything else."""
    if isinstance(inputs, Tensor):
        yield inputs
        return
    if not isinstance(inputs, Iterable):
        raise TypeError(f"inputs must be one batch as a Tensor or an iterable of batches, got "
                        f"{type(inputs).__name__}")
    for item in inputs:
        if isinstance(item, tuple | list) and item and isinstance(item[0], Tensor):
            item = item[0]  # a data loader's (x, y)
        if not isinstance(item, Tensor):
            raise TypeError(f"each batch must be a Tensor or an (x, y) tuple (inputs: one batch "
                            f"as a Tensor, or an iterable of batches), got "
                            f"{type(item).__name__}")
        yield item
