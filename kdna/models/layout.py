"""What every architecture file needs: torchvision weights by name, and applying a layout."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import torch
import torchvision
from torch import nn

from kdna.conversion.config import ConvertConfig
from kdna.conversion.convert import convert
from kdna.data.online import require_online
from kdna.nn.utils import head_name, replace_module

__all__ = ["OFFLINE_WEIGHTS", "apply_layout", "torchvision_model", "torchvision_weights"]

OFFLINE_WEIGHTS = ("kdna.create_model('efficientnet_lite0', weights='imagenet'), whose "
                   "ImageNet weights ship with pip")


def torchvision_weights(arch: str, weights: str | None) -> torchvision.models.WeightsEnum | None:
    """torchvision's weights ``arch`` / ``weights`` ("DEFAULT", "IMAGENET1K_V1", ...).

    Fails at once with a ``ConnectionError`` when they are not cached and the download
    host cannot be reached.
    """
    if weights is None:
        return None
    enum = torchvision.models.get_model_weights(arch)
    names = list(enum.__members__)
    if weights not in names:
        raise ValueError(f"weights for {arch} must be None or one of {names}, got {weights!r}")
    member = enum[weights]
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlsplit(member.url).path).name
    require_online(member.url, what=f"torchvision weights {arch}/{weights}",
                   offline=OFFLINE_WEIGHTS, cached=cached)
    return member


def torchvision_model(build: Callable[..., nn.Module], arch: str, weights: str | None,
                      num_classes: int, **kwargs) -> tuple[nn.Module, bool]:
    """``build(...)`` with torchvision's ``weights`` if given; ``(model, pretrained)``.

    A pretrained head with a number of classes other than ``num_classes`` is replaced by a
    fresh ``nn.Linear`` of the right size (fine-tuning on a new data set).
    """
    member = torchvision_weights(arch, weights)
    if member is None:
        return build(num_classes=num_classes, **kwargs), False
    model = build(weights=member, **kwargs)
    name = head_name(model)
    head = model.get_submodule(name)
    if head.out_features != num_classes:
        replace_module(model, name, nn.Linear(head.in_features, num_classes))
    return model, True


def apply_layout(model: nn.Module, groups: Mapping[str, Sequence[str]] | None, *,
                 pretrained: bool) -> nn.Module:
    """Make ``model`` a KernelDNA network with the given ``parent -> children`` groups.

    From scratch (the paper's setting, :meth:`ConvertConfig.from_scratch
    <kdna.conversion.config.ConvertConfig.from_scratch>`) the gates are the paper's sigmoid
    and each child starts as a copy of its parent. From pretrained weights
    (:meth:`ConvertConfig.pretrained_layout
    <kdna.conversion.config.ConvertConfig.pretrained_layout>`) the gates start at exactly 1
    and the static scales are fitted to the kernels they replace (see :func:`kdna.convert`).
    ``groups=None`` applies :func:`kdna.convert`'s automatic rule; both presets make the last
    member of each group the parent (as in the paper's layouts), so that the structure does
    not depend on the weights and a state_dict always fits a freshly built model.
    """
    preset = ConvertConfig.pretrained_layout if pretrained else ConvertConfig.from_scratch
    convert(model, preset(groups=groups))
    return model
