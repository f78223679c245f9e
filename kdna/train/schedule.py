"""The optimiser and learning-rate schedule that every kdna training loop shares.

* :func:`build_optimizer`: SGD with momentum (the reference recipe) or AdamW, over the
  parameters that require grad, with weight decay on every one of them (the reference) or
  only on kernels and weight matrices (:func:`weight_decay_groups`, what fine-tuning uses);
* :func:`warmup_cosine`: the per-step factor of ``torch.optim.lr_scheduler.LambdaLR``, a
  linear warm-up then a cosine decay (or a constant).

:func:`kdna.train.train_classifier` and :func:`kdna.dense.train.train_dense` both build their
optimiser and schedule here, so the two loops cannot drift apart.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

from kdna._checks import int_at_least, non_negative_float, one_of, positive_float, positive_int
from kdna.nn.conv import KernelChild
from kdna.nn.gate import ChannelGate
from kdna.nn.norm import NORM_LAYERS

__all__ = ["DECAY_ON", "OPTIMIZERS", "build_optimizer", "warmup_cosine", "weight_decay_groups"]

OPTIMIZERS = ("sgd", "adamw")
DECAY_ON = ("all", "weights")  # what weight decay falls on: every parameter, or weights only


def _exempt_from_decay(model: nn.Module) -> set[int]:
    """The ids of the parameters that weight decay should not pull towards zero."""
    exempt = {id(p) for p in model.parameters() if p.dim() < 2}  # biases, 1-D scales
    for module in model.modules():
        if isinstance(module, (*NORM_LAYERS, ChannelGate)):
            exempt |= {id(p) for p in module.parameters()}
        elif isinstance(module, KernelChild):
            exempt.add(id(module.filter_scale))
            if module.spatial_scale is not None:
                exempt.add(id(module.spatial_scale))
    return exempt


def weight_decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """``model``'s trainable parameters in two optimizer groups: kernels and weight matrices
    (convolutions, linear layers, LoRA's matrices, relaxed children's residuals) with
    ``weight_decay``, and everything else with none: every norm's scale and shift, every
    bias, KernelDNA's static scales and gates. Decay pulls a parameter towards zero; for a
    scale that multiplies ``1 + f`` or a gate, zero is not "small", it is a different function
    (nanoGPT's ``configure_optimizers`` makes the same split by dimension)."""
    non_negative_float("weight_decay", weight_decay)
    exempt = _exempt_from_decay(model)
    trainable = {id(p): p for p in model.parameters() if p.requires_grad}.values()
    groups = [{"params": [p for p in trainable if id(p) not in exempt],
               "weight_decay": weight_decay},
              {"params": [p for p in trainable if id(p) in exempt], "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(params: Iterable[nn.Parameter] | nn.Module, name: str, *, lr: float,
                    momentum: float, weight_decay: float, decay_on: str = "all"
                    ) -> torch.optim.Optimizer:
    """``torch.optim.SGD`` with ``momentum`` (``name="sgd"``) or ``torch.optim.AdamW`` with
    betas ``(momentum, 0.999)`` (``name="adamw"``), over the parameters that require grad.

    ``params`` is a module or its parameters. ``weight_decay`` applies to every one of them
    with ``decay_on="all"`` (the reference code), or, with ``decay_on="weights"`` (``params``
    must then be the module), only to kernels and weight matrices
    (:func:`weight_decay_groups`).

    Raises:
        ValueError: an unknown ``name`` or ``decay_on``, a learning rate that is not positive,
            or no parameter that requires grad (e.g. after freezing everything).
    """
    one_of("optimizer", name, OPTIMIZERS)
    one_of("decay_on", decay_on, DECAY_ON)
    positive_float("lr", lr)
    if decay_on == "weights":
        if not isinstance(params, nn.Module):
            raise TypeError(f"decay_on='weights' needs the module, to tell its norms and "
                            f"adapters from its weights; got {type(params).__name__}")
        groups = weight_decay_groups(params, weight_decay)
    else:
        modules = params.parameters() if isinstance(params, nn.Module) else params
        unique = {id(p): p for p in modules if p.requires_grad}.values()
        groups = [{"params": list(unique), "weight_decay": weight_decay}] if unique else []
    if not groups:
        raise ValueError("no trainable parameter: every parameter has requires_grad=False "
                         "(unfreeze some, e.g. with kdna.adapter_only)")
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    return torch.optim.AdamW(groups, lr=lr, betas=(momentum, 0.999))


def warmup_cosine(total_steps: int, warmup_steps: int, *, floor: float = 0.0, offset: int = 0,
                  cosine: bool = True) -> Callable[[int], float]:
    """The learning-rate factor of each step, for ``LambdaLR``: warm-up, then cosine decay.

    Step ``s`` (counted from ``offset``: a run that starts part-way through its schedule) is
    trained with the peak learning rate times

    * ``(s + 1) / warmup_steps`` while ``s < warmup_steps``: the warm-up;
    * then ``floor + (1 - floor) * (1 + cos(pi * p)) / 2``, ``p = (s - warmup_steps) /
      (total_steps - warmup_steps)`` (capped at 1): from 1 down to ``floor`` at
      ``total_steps``; or 1 throughout with ``cosine=False`` (constant after warm-up).

    Why ``(s + 1) / warmup_steps`` rather than ``(s + 1) / (warmup_steps + 1)``: the
    warm-up's last step is trained at the peak learning rate, so the peak is reached *at the
    end* of warm-up, as ``warmup_steps`` promises, and never one step later; no step has a
    learning rate of zero. Checkpoints store only the step, not the rates, so this formula must
    stay as it is for a checkpoint of :func:`kdna.train.train_classifier` to resume onto the
    learning rates it was trained with; :func:`kdna.dense.train.train_dense` warms up for no
    step by default.
    """
    total_steps = positive_int("total_steps", total_steps)
    warmup_steps = int_at_least("warmup_steps", warmup_steps, 0)
    offset = int_at_least("offset", offset, 0)
    floor = non_negative_float("floor", floor)

    def factor(step: int) -> float:
        step += offset
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if not cosine:
            return 1.0
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor
