"""The layers a conversion can touch, and what a child of one costs.

What both halves of a conversion need to know about a network's layers, kept apart from
either so that the plan (:mod:`kdna.conversion.rules`) and its execution
(:mod:`kdna.conversion.convert`) never call back into each other:

* the candidates (:func:`candidate_layers`: every exact ``nn.Conv2d`` and ``nn.Linear``) and
  their kind (:func:`layer_kind`), and :func:`select_layers` (include / exclude globs);
* one forward pass of a batch, in eval mode without gradients, that records each candidate's
  input shape (:func:`input_shapes`): the resolution that stands for a network's stage. Without
  ``example_inputs`` the batch is one zero image (:func:`default_inputs`) with the channels of
  the network's first convolution, the first the model registers, whatever its type (its stem:
  timm's ``Conv2dSame`` stems are convolutions too, though no candidate);
* what a child of a layer costs: the gate reduction a setting gives it
  (:func:`gate_reduction_for`), the parameters of its scales and gate (:func:`adapter_size`),
  the residual rank its kernel allows (:func:`residual_rank`).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from kdna.nn.conv import KernelChild
from kdna.nn.gate import ChannelGate
from kdna.nn.utils import count_parameters, eval_mode

__all__ = ["DEFAULT_SIDE", "adapter_size", "candidate_layers", "check_not_converted",
           "default_inputs", "gate_reduction_for", "input_shapes", "layer_kind",
           "residual_rank", "select_layers"]

DEFAULT_SIDE = 224  # the side of the zero image used when no example_inputs are given


def check_not_converted(model: nn.Module) -> None:
    """A ``ValueError`` if ``model`` already has KernelDNA children."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    already = [n for n, m in model.named_modules() if isinstance(m, KernelChild)]
    if already:
        raise ValueError(f"{type(model).__name__} is already converted ({len(already)} "
                         f"KernelDNA children, e.g. {already[0]!r}); convert a fresh copy")


def candidate_layers(model: nn.Module) -> dict[str, nn.Module]:
    """``name -> layer`` for every exact ``nn.Conv2d`` and ``nn.Linear`` of ``model``."""
    # Exact types: subclasses (timm's Conv2dSame, ...) may pad or reshape in forward.
    return {n: m for n, m in model.named_modules() if type(m) in (nn.Conv2d, nn.Linear)}


def layer_kind(module: nn.Module) -> str:
    """``"linear"``, ``"depthwise"`` (one input channel per group) or ``"conv"``."""
    if isinstance(module, nn.Linear):
        return "linear"
    return "depthwise" if module.groups > 1 and module.weight.shape[1] == 1 else "conv"


def default_inputs(model: nn.Module) -> Tensor:
    """One zero image of :data:`DEFAULT_SIDE` pixels with the input channels of ``model``'s
    first convolution (the first ``nn.Conv2d`` it registers, subclasses included), on its
    device and in its dtype; a ``ValueError`` for a model without one."""
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first is None:
        raise ValueError(f"{type(model).__name__} has no nn.Conv2d to tell its input shape; "
                         "pass example_inputs=<a batch the model accepts>")
    return torch.zeros(1, first.in_channels, DEFAULT_SIDE, DEFAULT_SIDE,
                       device=first.weight.device, dtype=first.weight.dtype)


def input_shapes(model: nn.Module, layers: dict[str, nn.Module], example_inputs: Tensor | None
                 ) -> tuple[dict[str, tuple[int, ...]], Any]:
    """Run one batch through ``model`` (eval mode, no gradients: not even a BatchNorm
    statistic moves) and record the input shape of each of ``layers``; ``(shapes, output)``.
    Without ``example_inputs``, :func:`default_inputs`."""
    if example_inputs is None:
        example_inputs = default_inputs(model)
    shapes: dict[str, tuple[int, ...]] = {}

    def record(name: str):
        def hook(_module: nn.Module, args: tuple) -> None:
            shapes.setdefault(name, tuple(args[0].shape))
        return hook

    handles = [m.register_forward_pre_hook(record(n)) for n, m in layers.items()]
    try:
        with eval_mode(model), torch.no_grad():
            output = model(example_inputs)
    except Exception as exc:
        raise ValueError(
            f"could not run a batch of shape {list(example_inputs.shape)} through "
            f"{type(model).__name__} to find each layer's resolution ({exc}); pass "
            "example_inputs=<a batch the model accepts>, or give groups explicitly"
        ) from exc
    finally:
        for handle in handles:
            handle.remove()
    return shapes, output


def select_layers(names: list[str], include: Sequence[str] | None,
                  exclude: Sequence[str] | None) -> list[str]:
    """The ``names`` that match a glob of ``include`` (all, if ``None``) and none of
    ``exclude``; a ``ValueError`` for a pattern that matches nothing."""
    for label, patterns in (("include", include), ("exclude", exclude)):
        for pattern in patterns or ():
            if not fnmatch.filter(names, pattern):
                example = names[len(names) // 2] if names else "none"
                raise ValueError(f"{label} pattern {pattern!r} matches no convolution or "
                                 f"pointwise layer (names look like {example!r})")
    return [n for n in names
            if (include is None or any(fnmatch.fnmatch(n, p) for p in include))
            and not any(fnmatch.fnmatch(n, p) for p in exclude or ())]


def gate_reduction_for(module: nn.Module, gate_reduction: int | str | None,
                       max_hidden: int | None = None) -> int | None:
    """The gate reduction ratio a child of ``module`` gets under the config's setting,
    raised where needed so that the gate's hidden width is at most ``max_hidden``."""
    if gate_reduction is None:
        return None
    c_in, c_out = module.weight.shape[1] * getattr(module, "groups", 1), module.weight.shape[0]
    if gate_reduction == "auto":
        # r = 4, raised by the expansion ratio when the input is wider than the output: the
        # paper's choice (r = 24 before MobileNetV2's 6x-expanded projection).
        gate_reduction = 4 * max(1, round(c_in / c_out))
    if max_hidden is not None:  # hidden = c_in // r <= max_hidden once r >= ceil(c_in / cap)
        gate_reduction = max(gate_reduction, -(-c_in // max_hidden))
    return gate_reduction


def adapter_size(module: nn.Module, reduction: int | None) -> int:
    """Parameters of the adapter (scales and gate) that replaces ``module``'s kernel."""
    weight = module.weight
    size = weight.shape[0] + (weight.shape[2] * weight.shape[3]
                              if weight.dim() == 4 and weight.shape[2:] != (1, 1) else 0)
    if reduction is not None:
        channels = weight.shape[1] * getattr(module, "groups", 1)
        with torch.device("meta"):
            size += count_parameters(ChannelGate(channels, reduction))
    return size


def residual_rank(module: nn.Module, rank: int) -> int:
    """The residual rank a shared child of ``module`` gets: ``rank``, at most the kernel's
    ``min(C_out, C_in / groups * kh * kw)``."""
    weight = module.weight
    return min(rank, weight.shape[0], weight[0].numel())
