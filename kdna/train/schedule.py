"""The optimiser and learning-rate schedule that every kdna training loop shares.

* :func:`build_optimizer`: SGD with momentum (the reference recipe) or AdamW, over the
  parameters that require grad;
* :func:`warmup_cosine`: the per-step factor of ``torch.optim.lr_scheduler.LambdaLR``, a
  linear warm-up then a cosine decay (or a constant).

:func:`kdna.train.fit` and :func:`kdna.dense.train.train_dense` both build their optimiser and
schedule here, so the two loops cannot drift apart.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

from kdna._checks import int_at_least, non_negative_float, one_of, positive_float, positive_int

__all__ = ["OPTIMIZERS", "build_optimizer", "warmup_cosine"]

OPTIMIZERS = ("sgd", "adamw")


def build_optimizer(params: Iterable[nn.Parameter], name: str, *, lr: float, momentum: float,
                    weight_decay: float) -> torch.optim.Optimizer:
    """``torch.optim.SGD`` with ``momentum`` (``name="sgd"``) or ``torch.optim.AdamW`` with
    betas ``(momentum, 0.999)`` (``name="adamw"``), over those ``params`` that require grad.

    ``weight_decay`` applies to every one of them, as in the reference code.

    Raises:
        ValueError: an unknown ``name``, a learning rate that is not positive, or no
            parameter that requires grad (e.g. after freezing everything).
    """
    one_of("optimizer", name, OPTIMIZERS)
    positive_float("lr", lr)
    trainable = [p for p in params if p.requires_grad]
    if not trainable:
        raise ValueError("no trainable parameter: every parameter has requires_grad=False "
                         "(unfreeze some, e.g. with kdna.adapter_only)")
    if name == "sgd":
        return torch.optim.SGD(trainable, lr=lr, momentum=momentum, weight_decay=weight_decay)
    return torch.optim.AdamW(trainable, lr=lr, betas=(momentum, 0.999), weight_decay=weight_decay)


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
    learning rate of zero. It is also the schedule :func:`kdna.train.fit` always had, so its
    checkpoints resume onto the same learning rates; :func:`kdna.dense.train.train_dense`
    warms up for no step by default, so none of its default runs changes.
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
