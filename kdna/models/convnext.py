"""ConvNeXt-Tiny with a KernelDNA layout of kdna's own design (the reference code has none).

A ConvNeXt block is an inverted bottleneck like MobileNetV2's: a 7x7 depthwise convolution,
LayerNorm, a pointwise expand (``nn.Linear`` 4x) and a pointwise project, run channels-last.
A Linear on every pixel is a 1x1 convolution, so the pointwise layers share as MobileNetV2's
do in the paper's layout (:class:`kdna.nn.linear.ChildLinear`):

* stages 1 and 2 (96 and 192 channels, 3 blocks each) are unchanged, like ``layer1`` and
  ``layer2`` in the paper's ResNets: they hold few parameters;
* stage 3 (384 channels, 9 blocks) is split into three runs of three blocks, stage 4 (768
  channels, 3 blocks) is one run; in each run the last block is the parent and the two
  blocks before it are children that share its expand and project weights;
* a child keeps its own depthwise convolution, LayerNorm, biases and layer scale, and gates
  the input of its expand (r = 4) and of its project (r = 16, the 4x expansion).

That is 8 children: 28.59M parameters become 17.28M (-40%), most of it saved in stage 4.
The depth is torchvision's, so ``weights="DEFAULT"`` converts the pretrained network to this
layout (gates at exactly 1, scales fitted).
"""

from __future__ import annotations

from torch import nn
from torchvision.models import convnext as tv

from kdna.models.layout import apply_layout, torchvision_model
from kdna.models.pretrained import imagenet_config

__all__ = ["PRETRAINED", "convnext_tiny"]

PRETRAINED = {"convnext_tiny": imagenet_config("convnext_tiny", "DEFAULT")}

# (index in ``features``, blocks) of each run: the last block is the parent.
_RUNS = ((5, (0, 1, 2)), (5, (3, 4, 5)), (5, (6, 7, 8)), (7, (0, 1, 2)))


def _groups() -> dict[str, list[str]]:
    groups = {}
    for stage, (*children, parent) in _RUNS:
        for layer in ("block.3", "block.5"):  # the pointwise expand and project
            groups[f"features.{stage}.{parent}.{layer}"] = [
                f"features.{stage}.{i}.{layer}" for i in children]
    return groups


def convnext_tiny(*, kernel_dna: bool = True, weights: str | None = None,
                  num_classes: int = 1000) -> nn.Module:
    """ConvNeXt-Tiny: kdna's KernelDNA layout (see the module docstring), or plain."""
    model, pretrained = torchvision_model(tv.convnext_tiny, "convnext_tiny", weights, num_classes)
    return apply_layout(model, _groups(), pretrained=pretrained) if kernel_dna else model
