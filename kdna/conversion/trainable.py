"""Adapter-only fine-tuning: train what KernelDNA added (and the norms and head), freeze the rest.

After :func:`kdna.convert`, the pretrained kernels (parents and every layer left dense) are
already good; what must learn is the adapters that turn a parent into each child. Training
only those, the normalisation layers (cheap, and they must follow the new statistics) and
the classifier head (new classes) is fast and needs little data.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from kdna.nn.norm import NORM_LAYERS
from kdna.nn.utils import children_of, head_name

__all__ = ["TrainableCount", "adapter_only"]


@dataclass(frozen=True)
class TrainableCount:
    """How many parameters will train, out of how many (shared tensors counted once)."""

    trainable: int
    total: int

    @property
    def fraction(self) -> float:
        return self.trainable / self.total

    def __str__(self) -> str:
        return (f"{self.trainable:,} trainable of {self.total:,} parameters "
                f"({100 * self.fraction:.1f}%)")


def adapter_only(model: nn.Module, *, head: str | None = "auto") -> TrainableCount:
    """Freeze ``model`` except its adapters, normalisation layers and classifier head.

    Trainable afterwards: every child's static scales, own bias and gate; every BatchNorm,
    LayerNorm and GroupNorm; and the ``head`` module (by default the last ``nn.Linear``,
    e.g. ResNet's ``fc``). Everything else is frozen, the shared parents included.

    Returns:
        the :class:`TrainableCount`; pass ``filter(lambda p: p.requires_grad,
        model.parameters())`` to the optimizer.
    """
    children = children_of(model, verb="fine-tune").values()
    if head == "auto":
        head = head_name(model)
    try:
        head_module = model.get_submodule(head) if head else None
    except AttributeError as exc:
        raise ValueError(f"head {head!r} is not a module of {type(model).__name__}") from exc
    model.requires_grad_(False)
    for child in children:
        for p in child.adapter_parameters():
            p.requires_grad_(True)
        if child.bias is not None:
            child.bias.requires_grad_(True)
    for module in model.modules():
        if isinstance(module, NORM_LAYERS):
            module.requires_grad_(True)
    if head_module is not None:
        head_module.requires_grad_(True)
    params = {id(p): p for p in model.parameters()}.values()
    return TrainableCount(sum(p.numel() for p in params if p.requires_grad),
                          sum(p.numel() for p in params))
