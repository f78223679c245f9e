"""Which pixels matter: captum attributions of a prediction, or of a child's routing.

Both functions return one map per image, ``[B, H, W]``: the absolute attribution of every
input pixel, summed over its colour channels. Two methods share one signature, as in captum:

* ``"integrated_gradients"``: gradients averaged along the straight path from a baseline to
  the input, times (input - baseline); ``steps`` points on the path, so the cost is about
  ``steps`` forward and backward passes. The baseline is ``"zeros"``, the all-zero input
  *tensor*: in normalised space that is the normalisation's mean colour (mid-grey for
  EfficientNet-Lite0's ``MEAN = STD = 0.5``, not black), or ``"blur"``, a Gaussian-blurred
  copy of the input (its colours kept, its detail removed);
* ``"saliency"``: the absolute gradient at the input alone; one pass, noisier.

:func:`attribute_prediction` explains a class score. :func:`attribute_gate` explains a child's
input gate, the part of KernelDNA that depends on the input: which pixels make the child
open or close its input channels.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
from torch import Tensor, nn

from kdna._checks import module_arg, one_of, positive_int, tensor_arg
from kdna._extras import require
from kdna.nn.gate import ChannelGate
from kdna.nn.utils import children_of, device_of, eval_mode

__all__ = ["BASELINES", "METHODS", "attribute_gate", "attribute_prediction", "gated_children"]

METHODS = ("integrated_gradients", "saliency")
BASELINES = ("zeros", "blur")


def gated_children(model: nn.Module) -> list[str]:
    """Names (as ``named_modules`` gives them) of the KernelDNA children with an input gate;
    empty when there is none."""
    module_arg("model", model)
    try:
        return list(children_of(model, gated=True))
    except ValueError:  # no gated child: the callers list the names, so none is an answer
        return []


def attribute_prediction(model: nn.Module, inputs: Tensor, target: int | Tensor | None = None,
                         *, method: str = "integrated_gradients", steps: int = 16,
                         baseline: str = "zeros") -> Tensor:
    """``[B, H, W]`` attribution of a class score to the input pixels.

    Args:
        model: a classifier ``[B, C, H, W] -> [B, classes]``; run in eval mode, and every
            module's mode is restored afterwards.
        inputs: ``[B, C, H, W]`` images, moved to the model's device.
        target: the class to explain: one for all images, one per image (a ``[B]`` tensor),
            or ``None`` for each image's predicted class.
        method: one of :data:`METHODS`.
        steps: points on the integrated-gradients path (ignored by ``"saliency"``).
        baseline: where that path starts, one of :data:`BASELINES` (see the module's text).

    Returns:
        the absolute attributions summed over colour channels, on the model's device.
    """
    module_arg("model", model)
    tensor_arg("inputs", inputs)
    _check_method(method, steps)
    inputs = _images(model, inputs)
    with eval_mode(model):
        with torch.no_grad():
            logits = model(inputs)
        if logits.dim() != 2 or logits.shape[0] != inputs.shape[0]:
            raise ValueError(f"attribute_prediction needs a model whose output is [batch, "
                             f"classes], got shape {list(logits.shape)}")
        target = _target(target, logits)
        return _attribute(model, inputs, target, method, steps, baseline)


def attribute_gate(model: nn.Module, inputs: Tensor, child: str, channel: int | None = None, *,
                   method: str = "integrated_gradients", steps: int = 16,
                   baseline: str = "zeros") -> Tensor:
    """``[B, H, W]`` attribution of a child's input gate to the input pixels.

    The explained score is the gate value of input ``channel`` of ``child`` or, when
    ``channel`` is ``None``, the gate's mean over its channels: how much of its input the
    child lets through overall, a scalar that means the same for the ``"paper"`` (0 to 1) and
    ``"identity"`` (0 to 2, 1 = unchanged) gate forms.

    The model runs with a forward hook on ``model.get_submodule(child).gate`` that captures the
    gate and stops the forward pass there (the layers after it cannot change it); the hook is
    removed after every pass, also when the model raises. A child whose gate runs more than
    once per forward pass is explained through its first call.

    Args:
        model: any network containing the child; eval mode, every module's mode restored.
        inputs: ``[B, C, H, W]`` images, moved to the model's device.
        child: the child's name in ``model.named_modules()`` (see :func:`gated_children`).
        channel: an input channel of the child, or ``None`` for the mean over channels.
        method, steps, baseline: as for :func:`attribute_prediction`.
    """
    module_arg("model", model)
    tensor_arg("inputs", inputs)
    _check_method(method, steps)
    gate = _gate_of(model, child)
    if channel is not None and (isinstance(channel, bool) or not isinstance(channel, int)
                                or not 0 <= channel < gate.channels):
        raise ValueError(f"channel must be None or an int in [0, {gate.channels}) for child "
                         f"{child!r}, got {channel!r}")
    inputs = _images(model, inputs)
    with eval_mode(model):
        return _attribute(_gate_score(model, gate, child, channel), inputs, None, method, steps,
                          baseline)


class _GateReached(Exception):
    """Raised by the capturing hook to end the forward pass once the gate is known."""


def _gate_score(model: nn.Module, gate: ChannelGate, child: str,
                channel: int | None) -> Callable[[Tensor], Tensor]:
    def forward(x: Tensor) -> Tensor:
        captured: list[Tensor] = []

        def hook(module: nn.Module, args: tuple, output: Tensor) -> None:
            captured.append(output)
            raise _GateReached

        handle = gate.register_forward_hook(hook)
        try:
            model(x)
        except _GateReached:
            pass
        finally:
            handle.remove()
        if not captured:
            raise ValueError(f"the model's forward pass never ran the gate of {child!r}")
        values = captured[0]
        return values.mean(dim=1) if channel is None else values[:, channel]

    return forward


def _attribute(forward: Callable[[Tensor], Tensor], inputs: Tensor, target: Tensor | None,
               method: str, steps: int, baseline: str = "zeros") -> Tensor:
    attr = require("captum.attr", "analysis", "kdna.analysis.attribution")
    one_of("baseline", baseline, BASELINES)
    if method == "saliency":
        attributions = attr.Saliency(forward).attribute(inputs, target=target, abs=True)
    else:
        attributions = attr.IntegratedGradients(forward).attribute(
            inputs, baselines=_baseline(inputs, baseline), target=target, n_steps=steps)
    return attributions.detach().abs().sum(dim=1)


def _baseline(inputs: Tensor, baseline: str) -> Tensor:
    if baseline == "zeros":
        return torch.zeros_like(inputs)
    blur = require("torchvision.transforms.functional", None, "baseline='blur'").gaussian_blur
    sigma = max(inputs.shape[-2:]) / 10
    size = min(2 * round(3 * sigma) + 1, 2 * ((min(inputs.shape[-2:]) - 1) // 2) + 1)
    return blur(inputs.detach(), [size, size], [sigma, sigma])


def _check_method(method: str, steps: int) -> None:
    one_of("method", method, METHODS)
    positive_int("steps", steps)


def _gate_of(model: nn.Module, child: str) -> ChannelGate:
    names = gated_children(model)
    shown = ", ".join(repr(n) for n in names[:12]) + (", ..." if len(names) > 12 else "")
    try:
        module = model.get_submodule(child) if isinstance(child, str) else None
    except AttributeError:
        module = None
    if module is None:
        raise ValueError(f"no child named {child!r} in the model; gated children: "
                         f"{shown or 'none'}")
    gate = getattr(module, "gate", None)
    if not isinstance(gate, ChannelGate):
        raise ValueError(f"{child!r} ({type(module).__name__}) has no input gate; gated "
                         f"children: {shown or 'none'}")
    return gate


def _images(model: nn.Module, inputs: Tensor) -> Tensor:
    if not isinstance(inputs, Tensor) or inputs.dim() != 4:
        shape = list(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__
        raise ValueError(f"inputs must be a [batch, channels, height, width] tensor, got {shape}")
    inputs = inputs.detach()
    first = next(itertools.chain(model.parameters(), model.buffers()), None)
    if first is not None:  # a model without tensors leaves the inputs where they are
        dtype = first.dtype if first.is_floating_point() else inputs.dtype
        inputs = inputs.to(device=device_of(model), dtype=dtype)
    return inputs.requires_grad_(True)  # captum would set it too, with a warning each call


def _target(target: int | Tensor | None, logits: Tensor) -> Tensor:
    batch, classes = logits.shape
    if target is None:
        return logits.argmax(dim=1)
    if isinstance(target, Tensor):
        target = target.to(logits.device).long().reshape(-1)
        if target.numel() == 1:
            target = target.expand(batch)
    elif isinstance(target, int) and not isinstance(target, bool):
        target = torch.full((batch,), target, device=logits.device, dtype=torch.long)
    else:
        raise TypeError(f"target must be None, an int or a tensor, got {type(target).__name__}")
    if target.shape != (batch,) or not ((target >= 0) & (target < classes)).all():
        raise ValueError(f"target must hold one class in [0, {classes}) per image (batch "
                         f"{batch}), got {target.tolist()}")
    return target
