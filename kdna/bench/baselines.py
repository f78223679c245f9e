"""Networks built from the other dynamic convolutions, to measure beside KernelDNA.

The layers themselves (CondConv, DY-Conv, ODConv) are in :mod:`kdna.nn.dynamic`.
:func:`dynamic_network` swaps a model's convolutions for one of them; :data:`BASELINES` names
the usual variants and :func:`build_baseline` builds them on torchvision networks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torchvision
from torch import nn

from kdna.conversion.layers import select_layers
from kdna.nn.dynamic import CondConv2d, DynamicConv2d, ExpertConv2d, ODConv2d
from kdna.nn.utils import replace_module

__all__ = ["ARCHS", "BASELINES", "build_baseline", "dynamic_network"]


# name: (module, options). The count after "x" is the number of kernels per layer.
BASELINES: dict[str, tuple[type[ExpertConv2d], dict[str, Any]]] = {
    "condconv8x": (CondConv2d, {"num_experts": 8}),
    "dyconv4x": (DynamicConv2d, {"num_kernels": 4}),
    "odconv1x": (ODConv2d, {"kernel_num": 1}),
    "odconv4x": (ODConv2d, {"kernel_num": 4}),
}
ARCHS = ("resnet18", "resnet50", "mobilenet_v2")
# Variants whose published ResNets keep the 1x1 projection shortcuts dense (see build_baseline).
_DENSE_SHORTCUTS = ("condconv8x", "odconv1x", "odconv4x")


def _method(method: str | type[ExpertConv2d]) -> tuple[type[ExpertConv2d], dict[str, Any]]:
    if isinstance(method, type) and issubclass(method, ExpertConv2d):
        return method, {}
    if method not in BASELINES:
        raise ValueError(f"unknown dynamic convolution {method!r}; expected one of "
                         f"{sorted(BASELINES)} or one of CondConv2d, DynamicConv2d, ODConv2d")
    return BASELINES[method]


def dynamic_network(model: nn.Module, method: str | type[ExpertConv2d], *,
                    include: Sequence[str] | None = None, exclude: Sequence[str] | None = None,
                    stem: bool = False, **options: Any) -> nn.Module:
    """Replace ``model``'s convolutions by a dynamic convolution, in place; returns ``model``.

    Args:
        model: a CNN built from ``nn.Conv2d`` (exact type; subclasses are left alone).
        method: a :data:`BASELINES` name (``"dyconv4x"``, ...) or one of the classes.
        include, exclude: glob patterns over qualified module names (``"layer3.*"``), matched
            as :func:`kdna.convert` matches them; each pattern must match something.
        stem: also replace the stem (the first convolution in module order); by default the
            stem stays dense, as in all three papers.
        **options: constructor options of the method (``temperature=...``), overriding the
            :data:`BASELINES` defaults.

    Every replacement comes from ``from_conv``, so it copies the dense geometry and kernel.
    All replacements are built before the first one is swapped in: an error leaves the
    model unchanged.
    """
    cls, defaults = _method(method)
    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d | ExpertConv2d)}
    stem_name = next(iter(convs), None)  # replaced or not, the stem stays the stem
    names = [n for n, m in convs.items() if type(m) is nn.Conv2d and (stem or n != stem_name)]
    chosen = select_layers(names, include, exclude)
    replacements = {name: cls.from_conv(convs[name], **{**defaults, **options})
                    for name in chosen}
    for name, module in replacements.items():
        replace_module(model, name, module)
    return model


def build_baseline(arch: str, method: str, *, num_classes: int = 1000, **kw: Any) -> nn.Module:
    """A randomly initialised torchvision ``arch`` (:data:`ARCHS`) with ``method``'s convs.

    ``kw`` goes to :func:`dynamic_network`. Without ``include``/``exclude``, the published
    ResNet layouts are followed: every conv but the stem, and for CondConv and ODConv not the
    1x1 projection shortcuts (``*.downsample.*``; the official ODConv ResNets keep them dense,
    and it brings CondConv's count closer to the published one). DY-Conv replaces them too.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {list(ARCHS)}")
    _method(method)
    model = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
    if (arch.startswith("resnet") and method in _DENSE_SHORTCUTS
            and kw.get("include") is None and kw.get("exclude") is None):
        kw["exclude"] = ["*.downsample.*"]
    return dynamic_network(model, method, **kw)
