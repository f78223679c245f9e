"""The networks a from-scratch comparison trains, by name: :data:`NETWORKS`.

Every network is in its CIFAR-style form for small images, the same change for all: the stem
is a 3x3 convolution of stride 1 and there is no max-pool (ImageNet's 7x7 stride-2 stem and
max-pool would shrink a 32x32 image to 8x8 before the first block). MobileNetV2's stem is
already 3x3: its stride becomes 1. A ``width`` multiplier narrows every ResNet alike (stage
widths ``round(64 * width)`` times 1, 2, 4, 8), so a CPU can afford the comparison; the
MobileNetV2 pair keeps its own 0.5x widths.

* ``resnet18``: plain ResNet-18 (blocks 2, 2, 2, 2);
* ``kdna_resnet18``: the paper's KernelDNA layout (:func:`kdna.models.resnet.resnet18`'s:
  blocks 2, 2, 3, 3, layer3 and layer4 with three dense 3x3 kernels feeding six convolutions,
  sigmoid gates, children starting as copies of their parents);
* ``resnet18_deep``: the control for depth, a plain network of blocks 2, 2, 3, 3, nothing
  shared (the layout's depth and MACs without its sharing and adapters);
* ``resnet18_narrow``: the control for size, plain ResNet-18 narrowed until its parameter
  count is the layout's (:func:`narrow_width` finds the base width);
* ``condconv8x``, ``dyconv4x``, ``odconv1x``, ``odconv4x``: plain ResNet-18 with kdna's
  dynamic convolutions (:mod:`kdna.bench.baselines`) in every convolution but the stem (and,
  for CondConv and ODConv, the 1x1 shortcuts, as their published ResNets do). Each expert
  kernel starts from its own random draw, as a network trained from scratch does; DY-Conv's
  temperature falls from 30 to 1 over the first 10% of the steps, as its paper anneals it
  (:func:`anneal_temperature`);
* ``mobilenet_v2_1d2``, ``kdna_mobilenet_v2_1d2``: MobileNetV2 0.5x, plain and the paper's
  KernelDNA layout.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle
from torchvision.models.resnet import BasicBlock

from kdna._checks import positive_int
from kdna.bench.baselines import dynamic_network
from kdna.models import create_model
from kdna.models.layout import apply_layout
from kdna.models.resnet import resnet18_groups
from kdna.nn.dynamic import DynamicConv2d, ExpertConv2d
from kdna.nn.utils import count_parameters

__all__ = ["NETWORKS", "CifarResNet", "Network", "anneal_temperature", "base_width",
           "build_network", "get_network", "list_networks", "narrow_width"]

RESNET18, DEEP = (2, 2, 2, 2), (2, 2, 3, 3)


@dataclass(frozen=True)
class Network:
    """One network of the comparison: how to build it and what it is."""

    name: str
    label: str  # for tables and figures
    what: str  # one sentence: what it is and what it controls for
    reference: str  # the plain network its throughput is read against
    build: Callable[..., nn.Module]  # build(num_classes, width, steps) -> module


def base_width(width: float) -> int:
    """The first stage's channels of a ResNet at ``width`` (64 at 1.0, at least 4)."""
    if not width > 0:
        raise ValueError(f"width must be a positive multiplier, got {width!r}")
    return max(4, round(64 * width))


class CifarResNet(nn.Module):
    """A ResNet of ``BasicBlock`` modules, ``depths`` blocks per stage, widths ``base`` times 1, 2,
    4, 8, with the CIFAR stem (3x3, stride 1, no max-pool); modules named as torchvision names
    them (``conv1``, ``layer3.0.downsample``, ``fc``) so that the paper's sharing and the
    dynamic convolutions' rules apply unchanged; initialised as torchvision's ResNets are."""

    def __init__(self, depths: tuple[int, ...], base: int, num_classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, base, 3, 1, 1, bias=False)
        self.bn1, self.relu, self.maxpool = nn.BatchNorm2d(base), nn.ReLU(inplace=True), \
            nn.Identity()
        channels = base
        for i, blocks in enumerate(depths):
            width, stride = base * 2 ** i, 1 if i == 0 else 2
            layers = []
            for b in range(blocks):
                down = None
                if b == 0 and (stride != 1 or channels != width):
                    down = nn.Sequential(nn.Conv2d(channels, width, 1, stride, bias=False),
                                         nn.BatchNorm2d(width))
                layers.append(BasicBlock(channels, width, stride if b == 0 else 1, down))
                channels = width
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
        self.stages = len(depths)
        self.avgpool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(self.stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(self.avgpool(x).flatten(1))


def _plain(depths: tuple[int, ...]) -> Callable[..., nn.Module]:
    def build(num_classes: int, width: float = 1.0, steps: int | None = None) -> nn.Module:
        return CifarResNet(depths, base_width(width), num_classes)
    return build


def _kdna_resnet18(num_classes: int, width: float = 1.0, steps: int | None = None) -> nn.Module:
    model = CifarResNet(DEEP, base_width(width), num_classes)
    return apply_layout(model, resnet18_groups(), pretrained=False)


@functools.cache
def narrow_width(width: float = 1.0, num_classes: int = 10) -> int:
    """The base width (first stage's channels) of the plain ResNet-18 whose parameter count
    is closest to the KernelDNA layout's at ``width`` (the size control): 57 against 64 at
    width 1.0 with 10 classes."""
    target = count_parameters(_kdna_resnet18(num_classes, width))

    def params(base: int) -> int:
        with torch.device("meta"):
            return count_parameters(CifarResNet(RESNET18, base, num_classes))

    return min(range(4, base_width(width) + 1), key=lambda b: (abs(params(b) - target), b))


def _narrow(num_classes: int, width: float = 1.0, steps: int | None = None) -> nn.Module:
    return CifarResNet(RESNET18, narrow_width(width, num_classes), num_classes)


def anneal_temperature(model: nn.Module, steps: int, *, start: float = 30.0, end: float = 1.0,
                       fraction: float = 0.1) -> RemovableHandle:
    """Lower every DY-Conv layer's softmax temperature linearly from ``start`` to ``end`` over
    the first ``fraction`` of ``steps`` training forward passes, then keep ``end`` (DY-Conv's
    recipe: a near-uniform attention while the kernels are young). A forward pre-hook counts
    the passes made in training mode; the handle removes it."""
    layers = [m for m in model.modules() if isinstance(m, DynamicConv2d)]
    if not layers:
        raise ValueError("anneal_temperature needs a model with DY-Conv layers (DynamicConv2d)")
    positive_int("steps", steps)
    span, count = max(1, round(fraction * steps)), [0]
    for layer in layers:
        layer.temperature = start

    def hook(module: nn.Module, args: object) -> None:
        if module.training:
            value = start + (end - start) * min(1.0, count[0] / span)
            for layer in layers:
                layer.temperature = value
            count[0] += 1

    return model.register_forward_pre_hook(hook)


def _dynamic(method: str) -> Callable[..., nn.Module]:
    def build(num_classes: int, width: float = 1.0, steps: int | None = None) -> nn.Module:
        model = CifarResNet(RESNET18, base_width(width), num_classes)
        shortcuts = None if method == "dyconv4x" else ["*.downsample.*"]
        dynamic_network(model, method, exclude=shortcuts)
        with torch.no_grad():
            for layer in model.modules():
                if isinstance(layer, ExpertConv2d):
                    for expert in layer.weight:  # each expert its own draw, not the dense copy
                        nn.init.kaiming_normal_(expert, mode="fan_out", nonlinearity="relu")
        if method == "dyconv4x" and steps is not None:
            anneal_temperature(model, steps)
        return model
    return build


def _mobilenet(kernel_dna: bool) -> Callable[..., nn.Module]:
    def build(num_classes: int, width: float = 1.0, steps: int | None = None) -> nn.Module:
        model = create_model("mobilenet_v2_1d2", kernel_dna=kernel_dna, num_classes=num_classes)
        model.features[0][0].stride = (1, 1)  # the CIFAR stem: 3x3 already, stride 1
        return model
    return build


_R18, _MB = "resnet18", "mobilenet_v2_1d2"
NETWORKS: dict[str, Network] = {n.name: n for n in (
    Network("resnet18", "ResNet-18", "plain ResNet-18, blocks 2, 2, 2, 2", _R18,
            _plain(RESNET18)),
    Network("kdna_resnet18", "KernelDNA ResNet-18",
            "the paper's layout: blocks 2, 2, 3, 3, layer3 and layer4 share three dense "
            "kernels among six convolutions through gated children", _R18, _kdna_resnet18),
    Network("resnet18_deep", "deep control", "plain, blocks 2, 2, 3, 3, nothing shared: the "
            "layout's depth without sharing or adapters", _R18, _plain(DEEP)),
    Network("resnet18_narrow", "narrow control", "plain ResNet-18 narrowed to the layout's "
            "parameter count", _R18, _narrow),
    Network("condconv8x", "CondConv-8x ResNet-18", "8 expert kernels per convolution, "
            "sigmoid routing", _R18, _dynamic("condconv8x")),
    Network("dyconv4x", "DY-Conv-4x ResNet-18", "4 kernels per convolution, softmax "
            "attention, temperature 30 to 1", _R18, _dynamic("dyconv4x")),
    Network("odconv1x", "ODConv-1x ResNet-18", "one kernel, attention over taps, input "
            "channels and filters", _R18, _dynamic("odconv1x")),
    Network("odconv4x", "ODConv-4x ResNet-18", "4 kernels, attention over kernels, taps, "
            "input channels and filters", _R18, _dynamic("odconv4x")),
    Network("mobilenet_v2_1d2", "MobileNetV2 0.5x", "plain MobileNetV2 0.5x", _MB,
            _mobilenet(False)),
    Network("kdna_mobilenet_v2_1d2", "KernelDNA MobileNetV2 0.5x", "the paper's layout: "
            "children share their parent block's pointwise kernels", _MB, _mobilenet(True)),
)}


def list_networks() -> list[str]:
    """The names of :data:`NETWORKS`, in table order."""
    return list(NETWORKS)


def get_network(name: str | Network) -> Network:
    """The :class:`Network` called ``name`` (a ``ValueError`` naming the known ones)."""
    if isinstance(name, Network):
        return name
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; expected one of {list_networks()}")
    return NETWORKS[name]


def build_network(name: str | Network, num_classes: int = 10, *, width: float = 1.0,
                  steps: int | None = None) -> nn.Module:
    """A freshly initialised ``name`` for ``num_classes`` classes at ``width`` (ResNets only;
    the MobileNetV2 pair keeps 0.5x). ``steps``: the training steps it will get, which
    DY-Conv's temperature schedule needs (without them its temperature stays at 30)."""
    positive_int("num_classes", num_classes)
    base_width(width)
    if steps is not None:
        positive_int("steps", steps)
    return get_network(name).build(num_classes, width, steps)
