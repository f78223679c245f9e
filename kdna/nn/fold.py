"""Deployment form: ``fold`` computes each child's static weight once, ``unfold`` undoes it.

Training recomputes ``parent * (1 + f) * (1 + s)`` on every forward pass, because all three
factors are learning. At inference they are constants, so :func:`fold` caches the product
in each child and, when asked, also folds the BatchNorm that follows the child into that
cached weight and a bias. The dynamic gate stays: it depends on the input, and it scales
the input, so it commutes with everything folded into the kernel.

Which BatchNorm follows a child is read from the module structure:

* the next module in the same ``nn.Sequential`` (torchvision's ``Conv2dNormActivation``,
  kdna's own layouts), or
* the sibling attribute named like the child with ``conv`` replaced by ``bn``
  (``conv2`` -> ``bn2``, ``conv`` -> ``bn``), as in torchvision's ResNet blocks.

The rule assumes the usual post-norm order (convolution, then BatchNorm); for a
pre-activation network, whose ``bn1`` comes *before* ``conv1``, use ``batchnorm=False``.

A folded BatchNorm is swapped for a :class:`FoldedNorm` placeholder that keeps the original
module, so :func:`unfold` puts it back and the model is exactly what it was.
"""

from __future__ import annotations

import re
from itertools import pairwise

from torch import Tensor, nn

from kdna._checks import module_arg
from kdna.nn.conv import ChildConv2d
from kdna.nn.utils import children_of

__all__ = ["FoldedNorm", "fold", "following_norms", "unfold"]


class FoldedNorm(nn.Module):
    """Stands where a BatchNorm was folded into the child before it: passes input through."""

    def __init__(self, norm: nn.BatchNorm2d) -> None:
        super().__init__()
        self.norm = norm

    def forward(self, x: Tensor) -> Tensor:
        return x


def _norm_name(child_name: str) -> str | None:
    match = re.fullmatch(r"conv(.*)", child_name)
    return f"bn{match.group(1)}" if match else None


def following_norms(model: nn.Module, kinds: type | tuple[type, ...] = ChildConv2d
                    ) -> dict[nn.Module, tuple[nn.Module, str]]:
    """Map each convolution of type ``kinds`` (by default the KernelDNA children) to
    ``(container, attribute)`` of the BatchNorm2d that follows it."""
    found: dict[nn.Module, tuple[nn.Module, str]] = {}
    for container in model.modules():
        named = list(container.named_children())
        if isinstance(container, nn.Sequential):
            pairs = [(m, nxt) for (_, m), nxt in pairwise(named)]
        else:
            siblings = dict(named)
            pairs = [(m, (_norm_name(name), siblings.get(_norm_name(name) or "")))
                     for name, m in named]
        for module, (norm_name, norm) in pairs:
            if (isinstance(module, kinds) and isinstance(norm, nn.BatchNorm2d)
                    and norm.num_features == module.out_channels):
                found[module] = (container, norm_name)
    return found


def fold(model: nn.Module, *, batchnorm: bool = True) -> nn.Module:
    """Put ``model`` in its deployment form, in place, and return it.

    Each child (:class:`ChildConv2d`, :class:`ChildLinear`) caches its static weight; with
    ``batchnorm=True`` the BatchNorm2d that follows a convolution child (see the module
    docstring) is folded in as well and replaced by a :class:`FoldedNorm`. The model is
    switched to eval mode: folded weights use the BatchNorm running statistics and do not
    train (a folded child refuses to run in training mode). :func:`unfold` restores the
    trainable form exactly.
    """
    module_arg("model", model)
    children = list(children_of(model, verb="fold").values())
    if any(child.is_folded for child in children):
        raise RuntimeError("model is already folded; call kdna.unfold(model) first")
    norms = following_norms(model) if batchnorm else {}
    norm_of = {child: getattr(container, name) for child, (container, name) in norms.items()}
    model.eval()
    for child in children:
        child.fold(norm_of.get(child))
    for child, (container, name) in norms.items():
        setattr(container, name, FoldedNorm(norm_of[child]))
    return model


def unfold(model: nn.Module) -> nn.Module:
    """Undo :func:`fold` in place (a no-op for children that are not folded); returns ``model``."""
    module_arg("model", model)
    children = list(children_of(model, verb="unfold").values())
    for container in list(model.modules()):
        for name, module in list(container.named_children()):
            if isinstance(module, FoldedNorm):
                setattr(container, name, module.norm)
    for child in children:
        child.unfold()
    return model
