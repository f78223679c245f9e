"""The paper's KernelDNA ResNet-18 and ResNet-50 layouts, on torchvision's ResNet.

Both keep ``layer1`` and ``layer2`` as they are and rebuild the last two stages so that
children borrow the 3x3 kernels of the dense blocks after them (KERNELDNA.md):

* **ResNet-18** (blocks 2, 2, 3, 3; 9.24M parameters against 11.69M): in ``layer3`` and
  ``layer4``, block 0 keeps its strided ``conv1`` and makes ``conv2`` a child of block 1's
  ``conv2``; block 1's ``conv1`` is another child of that kernel; block 2's ``conv1`` is a
  child of block 2's own ``conv2``. Three dense 3x3 kernels feed six convolutions.
* **ResNet-50** (blocks 3, 4, 7, 3; 22.78M against 25.56M): after the strided first block,
  ``layer3`` holds three (child, parent) bottleneck pairs and ``layer4`` one; a child block
  keeps its own 1x1 convolutions and BatchNorms and shares only its parent's 3x3 kernel.

Each child has its own gate (r = 4) and its own BatchNorm. ``kernel_dna=False`` gives
torchvision's plain network (optionally with torchvision's ImageNet weights).
"""

from __future__ import annotations

from torch import nn
from torchvision.models import resnet as tv

from kdna.models.layout import apply_layout, torchvision_model
from kdna.models.pretrained import imagenet_config

__all__ = ["PRETRAINED", "resnet18", "resnet18_groups", "resnet50"]

# torchvision's ImageNet weights exist for the plain networks (the paper's layouts are deeper).
PRETRAINED = {arch: imagenet_config(arch, "DEFAULT") for arch in ("resnet18", "resnet50")}


def _no_pretrained_layout(arch: str, weights: str | None) -> None:
    if weights is not None:
        raise ValueError(
            f"the paper's {arch} layout is deeper than torchvision's {arch}, so no pretrained "
            f"weights fit it (the paper trains it from scratch). For a pretrained KernelDNA "
            f"{arch}: model = kdna.create_model({arch!r}, kernel_dna=False, "
            f"weights={weights!r}); kdna.convert(model)"
        )


def _build(arch: str, block: type[nn.Module], depths: list[int], groups: dict[str, list[str]],
           *, kernel_dna: bool, weights: str | None, num_classes: int) -> nn.Module:
    """The paper's layout of ``arch`` (``depths`` blocks per stage, ``groups`` shared), or
    torchvision's plain ``arch``."""
    if not kernel_dna:
        return torchvision_model(getattr(tv, arch), arch, weights, num_classes)[0]
    _no_pretrained_layout(arch, weights)
    model = tv.ResNet(block, depths, num_classes=num_classes)
    return apply_layout(model, groups, pretrained=False)


def resnet18_groups() -> dict[str, list[str]]:
    """The paper's ResNet-18 sharing, ``parent -> children`` by module name, for a ResNet of
    blocks 2, 2, 3, 3 built from ``BasicBlock`` modules named as torchvision names them (any
    widths: :mod:`kdna.scratch` applies it to narrower networks)."""
    groups = {}
    for stage in ("layer3", "layer4"):
        groups[f"{stage}.1.conv2"] = [f"{stage}.0.conv2", f"{stage}.1.conv1"]
        groups[f"{stage}.2.conv2"] = [f"{stage}.2.conv1"]
    return groups


def resnet18(*, kernel_dna: bool = True, weights: str | None = None,
             num_classes: int = 1000) -> nn.Module:
    """ResNet-18: the paper's KernelDNA layout, or torchvision's plain network."""
    return _build("resnet18", tv.BasicBlock, [2, 2, 3, 3], resnet18_groups(),
                  kernel_dna=kernel_dna, weights=weights, num_classes=num_classes)


def resnet50(*, kernel_dna: bool = True, weights: str | None = None,
             num_classes: int = 1000) -> nn.Module:
    """ResNet-50: the paper's KernelDNA layout, or torchvision's plain network."""
    pairs = [("layer3", 1), ("layer3", 3), ("layer3", 5), ("layer4", 1)]
    groups = {f"{stage}.{i + 1}.conv2": [f"{stage}.{i}.conv2"] for stage, i in pairs}
    return _build("resnet50", tv.Bottleneck, [3, 4, 7, 3], groups, kernel_dna=kernel_dna,
                  weights=weights, num_classes=num_classes)
