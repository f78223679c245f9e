"""The paper's KernelDNA MobileNetV2 layout (1.0x and 0.5x), on torchvision's MobileNetV2.

The stages of width 32, 64, 96 and 160 (0.5x: 16, 32, 48, 80) become: the dense transition
block (stride or width change), then one child block (two in the 64 stage), then the parent
block last. A child block shares its parent's pointwise expand and project kernels, with a
filter scale only (a 1x1 kernel has no spatial taps), and keeps its own depthwise
convolution and three BatchNorms; it gates the input of its expand (r = 4) and of its
project (r = 24, the 6x expansion). The 16, 24 and 320 stages are unchanged and so is the
depth: 3.14M parameters against 3.50M (0.5x: 1.88M against 1.97M).

Because the depth is torchvision's, ``weights="DEFAULT"`` also works with ``kernel_dna=True``:
the pretrained network is converted to this layout (gates at exactly 1, scales fitted).
"""

from __future__ import annotations

from torch import nn
from torchvision.models import mobilenetv2 as tv

from kdna.models.layout import apply_layout, torchvision_model
from kdna.models.pretrained import imagenet_config

__all__ = ["PRETRAINED", "mobilenet_v2", "mobilenet_v2_1d2"]

# torchvision has ImageNet weights for the 1.0x network only.
PRETRAINED = {"mobilenet_v2": imagenet_config("mobilenet_v2", "DEFAULT"),
              "mobilenet_v2_1d2": imagenet_config("mobilenet_v2_1d2", None)}

# Indices in ``features`` of (transition, children..., parent) for the shared stages.
_SHARED_STAGES = ((4, 5, 6), (7, 8, 9, 10), (11, 12, 13), (14, 15, 16))


def _groups() -> dict[str, list[str]]:
    groups = {}
    for _transition, *children, parent in _SHARED_STAGES:
        for layer in ("conv.0.0", "conv.2"):  # the pointwise expand and project
            groups[f"features.{parent}.{layer}"] = [f"features.{i}.{layer}" for i in children]
    return groups


def _build(width: float, *, kernel_dna: bool, weights: str | None,
           num_classes: int) -> nn.Module:
    if weights is not None and width != 1.0:
        raise ValueError(f"torchvision has no pretrained MobileNetV2 {width}x; use weights=None")
    model, pretrained = torchvision_model(tv.mobilenet_v2, "mobilenet_v2", weights, num_classes,
                                          width_mult=width)
    return apply_layout(model, _groups(), pretrained=pretrained) if kernel_dna else model


def mobilenet_v2(*, kernel_dna: bool = True, weights: str | None = None,
                 num_classes: int = 1000) -> nn.Module:
    """MobileNetV2 1.0x: the paper's KernelDNA layout, or torchvision's plain network."""
    return _build(1.0, kernel_dna=kernel_dna, weights=weights, num_classes=num_classes)


def mobilenet_v2_1d2(*, kernel_dna: bool = True, weights: str | None = None,
                     num_classes: int = 1000) -> nn.Module:
    """MobileNetV2 0.5x ("1d2" in the reference code): the paper's layout, or plain."""
    return _build(0.5, kernel_dna=kernel_dna, weights=weights, num_classes=num_classes)
