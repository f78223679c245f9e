"""The input normalisation a pretrained network expects, kept with the network.

A network trained on images normalised one way computes nonsense on images normalised another
way: EfficientNet-Lite0's weights expect pixels in [-1, 1] (``mean = std = 0.5``), torchvision's
ImageNet weights expect ImageNet's channel statistics. So each registered architecture declares
a :class:`PretrainedConfig` (mean, std, the input side its weights were trained at, which
``weights=`` loads them, the labels of their head), :func:`kdna.create_model` attaches it to the
module it returns as ``model.pretrained_config``, and data transforms are built from it.

For networks from elsewhere, the same facts are read where their library keeps them: timm's
``model.pretrained_cfg`` dict, or a torchvision weights enum (its ``transforms()`` preset and
``meta["categories"]``, static values that download nothing). :func:`kdna.models.pretrained_config`
resolves a config for any network in one place; nothing guesses from an architecture's name.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torchvision
from torch import nn

from kdna.data.classification import IMAGENET_MEAN, IMAGENET_STD
from kdna.models.imagenet import imagenet_categories

__all__ = ["ATTRIBUTE", "DEFAULT_INPUT_SIZE", "PretrainedConfig", "attach", "carried",
           "from_timm", "from_torchvision_weights", "imagenet_config", "torchvision_weights_enum"]

ATTRIBUTE = "pretrained_config"  # the module attribute create_model sets
DEFAULT_INPUT_SIZE = 224  # when mean and std are given and nothing says the size


def _floats(name: str, values: object) -> tuple[float, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        raise TypeError(f"{name} must be a non-empty sequence of numbers (one per channel), "
                        f"got {values!r}")
    if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
               for v in values):
        raise ValueError(f"{name} must hold finite numbers, one per channel, got {values!r}")
    return tuple(float(v) for v in values)


@dataclass(frozen=True, repr=False)
class PretrainedConfig:
    """What a pretrained network expects of its inputs, and what its head means.

    Attributes:
        mean, std: per-channel normalisation ``(x - mean) / std`` of pixels in [0, 1].
        input_size: the side (pixels) of the square inputs the weights were trained at.
        weights: the ``weights=`` value that makes :func:`kdna.create_model` load the
            pretrained weights of this architecture's plain network (``"imagenet"``,
            ``"DEFAULT"``, a torchvision weights name), or ``None`` where none exist.
        classes: the label of each output of the pretrained head, in order, or ``None`` where
            the head is not the pretrained one (or its labels are unknown).
        source: where these values came from, in words (``"kdna registry: resnet50"``,
            ``"timm pretrained_cfg resnet18.a1_in1k"``, ``"given"``, ...).
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_size: int = DEFAULT_INPUT_SIZE
    weights: str | None = None
    classes: tuple[str, ...] | None = None
    source: str = "given"

    def __post_init__(self) -> None:
        mean, std = _floats("mean", self.mean), _floats("std", self.std)
        if len(mean) != len(std):
            raise ValueError(f"mean and std must have one value per channel each, got "
                             f"{len(mean)} means and {len(std)} standard deviations")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {std}")
        size = self.input_size
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size <= 0:
            raise ValueError(f"input_size must be a positive integer (pixels), got {size!r}")
        if self.weights is not None and (not isinstance(self.weights, str) or not self.weights):
            raise TypeError(f"weights must be None or a non-empty string, got {self.weights!r}")
        classes = self.classes
        if classes is not None:
            if isinstance(classes, str) or not isinstance(classes, Sequence) or not classes \
                    or not all(isinstance(c, str) for c in classes):
                raise TypeError(f"classes must be None or a non-empty sequence of label "
                                f"strings, got {classes!r}")
            classes = tuple(classes)
        if not isinstance(self.source, str) or not self.source:
            raise TypeError(f"source must be a non-empty string, got {self.source!r}")
        for name, value in (("mean", mean), ("std", std), ("input_size", int(size)),
                            ("classes", classes)):
            object.__setattr__(self, name, value)

    def __repr__(self) -> str:  # a thousand class names would bury the rest
        classes = "None" if self.classes is None else \
            f"<{len(self.classes)} names: {', '.join(self.classes[:3])}, ...>"
        return (f"PretrainedConfig(mean={self.mean}, std={self.std}, input_size="
                f"{self.input_size}, weights={self.weights!r}, classes={classes}, "
                f"source={self.source!r})")


def imagenet_config(arch: str, weights: str | None) -> PretrainedConfig:
    """The config of a registered ``arch`` with torchvision's ImageNet normalisation at 224
    pixels; ``weights`` is the ``weights=`` value of its pretrained plain network, if any."""
    return PretrainedConfig(IMAGENET_MEAN, IMAGENET_STD, 224, weights,
                            None if weights is None else tuple(imagenet_categories()),
                            f"kdna registry: {arch}")


def attach(model: nn.Module, config: PretrainedConfig) -> nn.Module:
    """Set ``model.pretrained_config``: a plain attribute, so it survives ``deepcopy`` and
    pickling and stays out of ``state_dict``. Returns ``model``."""
    setattr(model, ATTRIBUTE, config)
    return model


def carried(model: nn.Module) -> PretrainedConfig | None:
    """The config ``model`` carries, or that the network it wraps carries: wrappers that
    forward attributes (peft's ``PeftModel``, ``torch.compile``) show it directly, and
    ``DataParallel`` / ``DistributedDataParallel`` keep the network as ``.module``."""
    for candidate in (model, getattr(model, "module", None)):
        config = getattr(candidate, ATTRIBUTE, None) if candidate is not None else None
        if isinstance(config, PretrainedConfig):
            return config
    return None


def from_timm(model: nn.Module) -> PretrainedConfig | None:
    """The config in timm's ``model.pretrained_cfg`` (mean, std, ``input_size`` as
    ``(C, H, W)``), or ``None`` when ``model`` has none. Classes: ImageNet's names when both
    the pretrained head and ``model``'s have 1000 outputs (timm's ImageNet-1k order is
    torchvision's), else ``None``."""
    cfg = getattr(model, "pretrained_cfg", None)
    if not isinstance(cfg, Mapping) or "mean" not in cfg or "std" not in cfg:
        return None
    shape = tuple(cfg.get("input_size") or (DEFAULT_INPUT_SIZE,))
    name = ".".join(str(cfg[k]) for k in ("architecture", "tag") if cfg.get(k))
    imagenet = cfg.get("num_classes") == 1000 and getattr(model, "num_classes", None) == 1000
    return PretrainedConfig(cfg["mean"], cfg["std"], max(shape[-2:]), None,
                            tuple(imagenet_categories()) if imagenet else None,
                            f"timm pretrained_cfg {name}".rstrip())


def torchvision_weights_enum(weights: object) -> torchvision.models.WeightsEnum:
    """``weights`` as a torchvision weights member: a member itself, or its full name
    (``"ResNet50_Weights.IMAGENET1K_V2"``)."""
    if isinstance(weights, torchvision.models.WeightsEnum):
        return weights
    if isinstance(weights, str) and "." in weights:
        try:
            return torchvision.models.get_weight(weights)
        except (KeyError, ValueError, AttributeError):
            pass
    raise ValueError(f"weights must be a torchvision weights enum member or its full name "
                     f"(e.g. torchvision.models.ResNet50_Weights.IMAGENET1K_V2 or "
                     f"'ResNet50_Weights.IMAGENET1K_V2'), got {weights!r}")


def from_torchvision_weights(weights: object) -> PretrainedConfig:
    """The config of torchvision ``weights`` (see :func:`torchvision_weights_enum`), read from
    its ``transforms()`` preset (mean, std, crop size) and ``meta["categories"]``; nothing is
    downloaded."""
    member = torchvision_weights_enum(weights)
    preset = member.transforms()
    size = getattr(preset, "crop_size", None) or getattr(preset, "resize_size", None)
    if not hasattr(preset, "mean") or not size:
        raise ValueError(f"torchvision weights {member} do not state an image normalisation "
                         f"(mean, std and size); pass mean= and std= instead")
    categories = member.meta.get("categories")
    return PretrainedConfig(preset.mean, preset.std, int(max(size)), member.name,
                            tuple(categories) if categories else None,
                            f"torchvision weights {member}")
