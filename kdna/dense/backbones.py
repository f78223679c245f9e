"""Dense prediction: KernelDNA ResNets as backbones of torchvision's detectors and segmenters.

:func:`faster_rcnn`, :func:`mask_rcnn` and :func:`deeplabv3` build torchvision's own models
(``torchvision.models.detection.FasterRCNN`` / ``MaskRCNN`` with a feature pyramid,
``torchvision.models.segmentation.DeepLabV3``) around a ResNet trunk chosen by ``trunk``:

* ``"paper"``: the paper's KernelDNA layout (``kdna.create_model(arch)``), deeper than
  torchvision's ResNet, trained from scratch;
* ``"converted"``: torchvision's ResNet converted by :func:`kdna.convert`'s automatic rule,
  the last layer of each group as the parent (so the layout never depends on the weights and
  a saved state_dict fits a fresh model). With ``weights_backbone`` (torchvision's ImageNet
  weights) the gates start at exactly 1 and the scales are fitted; from scratch the gates
  are the paper's sigmoid and each child starts as a copy of its parent;
* ``"plain"``: torchvision's plain ResNet, the baseline.

(``kernel_dna`` is the yes/no switch of :func:`kdna.create_model`; the three-way choice here
has its own name.)

The trunk is wired here rather than by torchvision's ``resnet_fpn_backbone``, which builds
its own ResNet: :func:`resnet_fpn_backbone` reads the stages' widths from the block type, so
the paper layout's rebuilt ``layer3`` / ``layer4`` fit as well as torchvision's.

Normalisation, decided for small batches of large images:

* **gates**: every KernelDNA gate's ``BatchNorm1d`` becomes a :class:`kdna.nn.FrozenBatchNorm1d`:
  fixed statistics (never updated), trainable scale and shift. A detector sees 1-4 images per
  step, and batch statistics of 2 pooled descriptors are nearly meaningless (batch 1 even
  raises).
* **feature maps**: with ``weights_backbone``, every ``BatchNorm2d`` of the trunk (the
  children's own included) becomes a :class:`kdna.nn.FrozenBatchNorm2d` whose scale and shift
  are frozen too, as torchvision's detectors freeze theirs; from scratch they stay ordinary
  ``BatchNorm2d`` (statistics over batch x height x width are fine at batch 2, and train with
  batch 1 as long as a map has more than a pixel).

Defaults are sized for a CPU and small images (``min_size=320``, a 128-channel pyramid on
``layer2``-``layer4``, light heads, 128 sampled proposals per image); torchvision's full-size
settings are ``min_size=800, max_size=1333, returned_layers=(1, 2, 3, 4), fpn_channels=256,
representation_size=1024, mask_layers=(256, 256, 256, 256)`` and its samplers' defaults
(pass ``box_batch_size_per_image=512`` etc. through ``**kwargs``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Literal

from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.segmentation import DeepLabV3
from torchvision.models.segmentation.deeplabv3 import DeepLabHead

from kdna._checks import one_of
from kdna.models import create_model
from kdna.models.layout import apply_layout
from kdna.nn.conv import ChildConv2d
from kdna.nn.gate import ChannelGate
from kdna.nn.norm import FrozenBatchNorm2d, freeze_batchnorm

__all__ = ["ARCHS", "TRUNKS", "deeplabv3", "faster_rcnn", "mask_rcnn", "resnet_fpn_backbone",
           "resnet_trunk"]

ARCHS = ("resnet18", "resnet50")
TRUNKS = ("paper", "converted", "plain")
Trunk = Literal["paper", "converted", "plain"]
_STAGES = ("layer4", "layer3", "layer2", "layer1", "conv1")  # torchvision's trainable order


def _trunk_kind(arch: str, trunk: str) -> str:
    """The checked trunk kind."""
    one_of("arch", arch, ARCHS)
    return one_of("trunk", trunk, TRUNKS)


def _freeze_norms(trunk: nn.Module, frozen_2d: bool) -> None:
    """Freeze the statistics of the gates' BatchNorm1d; with ``frozen_2d``, of every BatchNorm2d
    too, and their scale and shift."""
    for gate in [m for m in trunk.modules() if isinstance(m, ChannelGate)]:
        freeze_batchnorm(gate)
    if frozen_2d:
        freeze_batchnorm(trunk)
        for module in trunk.modules():
            if isinstance(module, FrozenBatchNorm2d):
                module.requires_grad_(False)


def resnet_trunk(arch: str = "resnet18", *, trunk: Trunk = "paper",
                 weights_backbone: str | None = None) -> nn.Module:
    """The ResNet classifier whose stages become a backbone (its ``fc`` is never run).

    From scratch, each residual block's last BatchNorm starts at zero (every block starts
    as the identity), which makes dense training from scratch converge much sooner.
    ``weights_backbone`` ("DEFAULT", "IMAGENET1K_V1", ...) loads torchvision's ImageNet
    weights (downloaded when online; offline a ``ConnectionError`` at once) before any
    conversion; the paper layout has no pretrained weights (a ``ValueError`` says so).
    """
    kind = _trunk_kind(arch, trunk)
    model = create_model(arch, kernel_dna=kind == "paper", weights=weights_backbone)
    if kind == "converted":
        apply_layout(model, None, pretrained=weights_backbone is not None)
    if weights_backbone is None:
        _zero_init_residual(model)
    return model


def _zero_init_residual(trunk: nn.Module) -> None:
    """Start each residual block's last BatchNorm at zero, so that every block starts as the
    identity (torchvision's ``zero_init_residual``; Goyal et al., 2017): the deep trunk
    starts as a shallow network, and dense training from scratch gets going far sooner."""
    for stage in (trunk.layer1, trunk.layer2, trunk.layer3, trunk.layer4):
        for block in stage:
            nn.init.zeros_(block.bn3.weight if hasattr(block, "bn3") else block.bn2.weight)


def _prepare(arch: str, trunk: Trunk, weights_backbone: str | None,
             trainable_layers: int | None) -> nn.Module:
    """Build the trunk, set its norms and freeze all but the last ``trainable_layers``."""
    if trainable_layers is None:
        trainable_layers = 3 if weights_backbone is not None else 5
    if isinstance(trainable_layers, bool) or not isinstance(trainable_layers, int) or not (
            0 <= trainable_layers <= 5):
        raise ValueError(f"trainable_layers must be an integer from 0 to 5, got "
                         f"{trainable_layers!r}")
    trunk = resnet_trunk(arch, trunk=trunk, weights_backbone=weights_backbone)
    _freeze_norms(trunk, frozen_2d=weights_backbone is not None)
    train = _STAGES[:trainable_layers] + (("bn1",) if trainable_layers == 5 else ())
    for name, parameter in trunk.named_parameters():
        if not name.startswith(train):
            parameter.requires_grad_(False)
    return trunk


def _stage_channels(trunk: nn.Module, stage: int) -> int:
    return 64 * 2 ** (stage - 1) * type(trunk.layer1[0]).expansion


def _layers(returned_layers: Sequence[int]) -> list[int]:
    layers = sorted(set(returned_layers)) if isinstance(returned_layers, Sequence) else []
    if not layers or any(isinstance(k, bool) or k not in (1, 2, 3, 4) for k in layers):
        raise ValueError(f"returned_layers must be a non-empty subset of (1, 2, 3, 4), got "
                         f"{returned_layers!r}")
    return layers


def resnet_fpn_backbone(arch: str = "resnet18", *, trunk: Trunk = "paper",
                        weights_backbone: str | None = None, trainable_layers: int | None = None,
                        returned_layers: Sequence[int] = (2, 3, 4),
                        fpn_channels: int = 128) -> BackboneWithFPN:
    """A ResNet trunk (see :func:`resnet_trunk`) with a feature pyramid on ``returned_layers``.

    The result maps an image batch to an ``OrderedDict`` of ``fpn_channels``-channel maps
    named ``"0"``, ``"1"``, ... (one per returned stage, strides ``2 ** (stage + 1)``) and
    ``"pool"`` (a max-pooled extra level); ``.out_channels`` is ``fpn_channels``.

    Args:
        trainable_layers: how many of ``layer4, layer3, layer2, layer1, conv1`` (counted
            from the top) train; the rest are frozen. Default: 5 from scratch, 3 with weights.
    """
    if isinstance(fpn_channels, bool) or not isinstance(fpn_channels, int) or fpn_channels < 1:
        raise ValueError(f"fpn_channels must be a positive integer, got {fpn_channels!r}")
    kind = _trunk_kind(arch, trunk)
    layers = _layers(returned_layers)
    model = _prepare(arch, kind, weights_backbone, trainable_layers)
    return BackboneWithFPN(model, {f"layer{k}": str(i) for i, k in enumerate(layers)},
                           [_stage_channels(model, k) for k in layers], fpn_channels)


def _anchors(returned_layers: Sequence[int], anchor_sizes: Sequence[int] | None
             ) -> AnchorGenerator:
    levels = len(_layers(returned_layers)) + 1  # the extra "pool" level
    if anchor_sizes is None:  # four times each level's stride
        anchor_sizes = [4 * 2 ** (k + 1) for k in _layers(returned_layers)]
        anchor_sizes.append(2 * anchor_sizes[-1])
    if len(anchor_sizes) != levels or any(not isinstance(s, int) or s < 1 for s in anchor_sizes):
        raise ValueError(f"anchor_sizes must be {levels} positive integers (one per returned "
                         f"layer, plus the pooled level), got {anchor_sizes!r}")
    return AnchorGenerator(tuple((s,) for s in anchor_sizes), ((0.5, 1.0, 2.0),) * levels)


def _detector_args(num_classes: int, backbone: BackboneWithFPN, returned_layers, anchor_sizes,
                   representation_size: int, min_size: int, max_size: int, kwargs: dict
                   ) -> dict:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer of at least 2 (background "
                         f"included), got {num_classes!r}")
    for name, value in (("min_size", min_size), ("max_size", max_size),
                        ("representation_size", representation_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    resolution = 7  # torchvision's MultiScaleRoIAlign output for boxes
    kwargs.setdefault("box_head", TwoMLPHead(backbone.out_channels * resolution ** 2,
                                             representation_size))
    kwargs.setdefault("box_predictor", FastRCNNPredictor(representation_size, num_classes))
    kwargs.setdefault("rpn_batch_size_per_image", 128)
    kwargs.setdefault("box_batch_size_per_image", 128)
    return {"min_size": min_size, "max_size": max_size,
            "rpn_anchor_generator": _anchors(returned_layers, anchor_sizes), **kwargs}


def faster_rcnn(num_classes: int, *, arch: str = "resnet18", trunk: Trunk = "paper",
                weights_backbone: str | None = None, trainable_layers: int | None = None,
                returned_layers: Sequence[int] = (2, 3, 4), fpn_channels: int = 128,
                anchor_sizes: Sequence[int] | None = None, representation_size: int = 256,
                min_size: int = 320, max_size: int = 512, **kwargs) -> FasterRCNN:
    """torchvision's Faster R-CNN with a (KernelDNA) ResNet-FPN backbone.

    The pyramid and heads always start from random initialisation (no pretrained detection
    weights fit a KernelDNA trunk); ``weights_backbone`` only concerns the trunk. Trains with
    any batch size, one image included (the gates' BatchNorm is a
    :class:`kdna.nn.FrozenBatchNorm1d`).

    Args:
        num_classes: classes including the background (label 0).
        arch: ``"resnet18"`` or ``"resnet50"``.
        trunk: ``"paper"``, ``"converted"`` or ``"plain"`` (see :mod:`kdna.dense.backbones`).
        weights_backbone: torchvision ImageNet weights for the trunk (``"DEFAULT"``,
            ``"IMAGENET1K_V1"``), with ``"converted"`` or ``"plain"`` only.
        trainable_layers: stages that train, from the top (see :func:`resnet_fpn_backbone`).
        returned_layers, fpn_channels: the pyramid's stages and width.
        anchor_sizes: one anchor side per pyramid level (returned layers, then the pooled
            level), each with aspect ratios 0.5, 1, 2; default four times the level's stride.
        representation_size: width of the box head's two fully connected layers.
        min_size, max_size: images are rescaled so their short side is ``min_size`` (long
            side at most ``max_size``); use the images' own size to keep them as they are.
        **kwargs: passed on to ``torchvision.models.detection.FasterRCNN``.
    """
    backbone = resnet_fpn_backbone(arch, trunk=trunk, weights_backbone=weights_backbone,
                                   trainable_layers=trainable_layers,
                                   returned_layers=returned_layers, fpn_channels=fpn_channels)
    return FasterRCNN(backbone, **_detector_args(num_classes, backbone, returned_layers,
                                                 anchor_sizes, representation_size, min_size,
                                                 max_size, kwargs))


def mask_rcnn(num_classes: int, *, arch: str = "resnet18", trunk: Trunk = "paper",
              weights_backbone: str | None = None, trainable_layers: int | None = None,
              returned_layers: Sequence[int] = (2, 3, 4), fpn_channels: int = 128,
              anchor_sizes: Sequence[int] | None = None, representation_size: int = 256,
              mask_layers: Sequence[int] = (128, 128), min_size: int = 320,
              max_size: int = 512, **kwargs) -> MaskRCNN:
    """torchvision's Mask R-CNN with a (KernelDNA) ResNet-FPN backbone (heads from scratch).

    Arguments as :func:`faster_rcnn`, and ``mask_layers``: the widths of the mask head's
    3x3 convolutions (torchvision: four of 256); the predictor's width is the last one.
    """
    if (not isinstance(mask_layers, Sequence) or not mask_layers
            or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in mask_layers)):
        raise ValueError(f"mask_layers must be a non-empty sequence of positive integers, got "
                         f"{mask_layers!r}")
    backbone = resnet_fpn_backbone(arch, trunk=trunk, weights_backbone=weights_backbone,
                                   trainable_layers=trainable_layers,
                                   returned_layers=returned_layers, fpn_channels=fpn_channels)
    args = _detector_args(num_classes, backbone, returned_layers, anchor_sizes,
                          representation_size, min_size, max_size, kwargs)
    args.setdefault("mask_head", MaskRCNNHeads(backbone.out_channels, list(mask_layers), 1))
    args.setdefault("mask_predictor", MaskRCNNPredictor(mask_layers[-1], mask_layers[-1],
                                                        num_classes))
    return MaskRCNN(backbone, **args)


def _dilate(stage: nn.Module, dilation: int) -> None:
    """Trade ``stage``'s stride for dilation (torchvision's ``replace_stride_with_dilation``,
    applied after construction so that it also reaches KernelDNA children)."""
    for module in stage.modules():
        if isinstance(module, nn.Conv2d | ChildConv2d):
            module.stride = (1, 1)
            if module.kernel_size != (1, 1):
                module.dilation = (dilation, dilation)
                module.padding = (dilation * (module.kernel_size[0] // 2),
                                  dilation * (module.kernel_size[1] // 2))


class _UpToLayer4(nn.ModuleDict):
    """A ResNet trunk run from ``conv1`` to ``layer4``, returning ``{"out": features}`` (the
    backbone DeepLabV3 takes). Its modules keep their trunk names, so does its state_dict."""

    def __init__(self, trunk: nn.Module) -> None:
        layers = OrderedDict()
        for name, module in trunk.named_children():
            layers[name] = module
            if name == "layer4":
                break
        super().__init__(layers)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        for module in self.values():
            x = module(x)
        return {"out": x}


def deeplabv3(num_classes: int, *, arch: str = "resnet18", trunk: Trunk = "paper",
              weights_backbone: str | None = None, trainable_layers: int | None = None,
              output_stride: int = 16, atrous_rates: Sequence[int] = (3, 6, 9)
              ) -> DeepLabV3:
    """torchvision's DeepLabV3 (ASPP head, no auxiliary head) on a (KernelDNA) ResNet.

    ``model(images)["out"]`` holds ``[B, num_classes, H, W]`` logits at the input size.
    Training needs batches of two images or more: the ASPP's image-pooling branch has a
    ``BatchNorm2d`` over one value per image (torchvision's head, unchanged).

    Args:
        num_classes: classes including the background.
        arch, trunk, weights_backbone, trainable_layers: as in :func:`faster_rcnn`.
        output_stride: 32 (no dilation), 16 (``layer4`` dilated) or 8 (``layer3`` and
            ``layer4``), torchvision's ``replace_stride_with_dilation``; finer is slower.
        atrous_rates: the ASPP's three dilation rates (torchvision: 12, 24, 36 for large
            images at stride 8; small images want small rates).
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer of at least 2 (background "
                         f"included), got {num_classes!r}")
    if output_stride not in (8, 16, 32):
        raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride!r}")
    if (not isinstance(atrous_rates, Sequence) or len(atrous_rates) != 3
            or any(isinstance(r, bool) or not isinstance(r, int) or r < 1
                   for r in atrous_rates)):
        raise ValueError(f"atrous_rates must be three positive integers, got {atrous_rates!r}")
    kind = _trunk_kind(arch, trunk)
    model = _prepare(arch, kind, weights_backbone, trainable_layers)
    if output_stride <= 16:
        _dilate(model.layer4, 2 if output_stride == 16 else 4)
    if output_stride == 8:
        _dilate(model.layer3, 2)
    backbone = _UpToLayer4(model)
    head = DeepLabHead(_stage_channels(model, 4), num_classes, atrous_rates)
    return DeepLabV3(backbone, head, None)
