"""The record a conversion leaves on the network: its base's per-tensor digests and the plan.

:func:`kdna.conversion.convert.apply_plan` records, on the model it converts, the plan it
carried out and a digest of every tensor of the base's ``state_dict`` (a
:class:`ConversionRecord`, read back with :func:`conversion_record`). That is what lets
:func:`kdna.save_adapters` write only what differs from the base, and lets
:func:`kdna.load_adapters` refuse a base whose weights are not the ones the adapters were
trained on.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["ATTRIBUTE", "ConversionRecord", "conversion_record", "fingerprint",
           "record_conversion", "state_digests", "tensor_digest"]

ATTRIBUTE = "kdna_conversion"  # the attribute of a converted model that holds its record
DIGEST_CHARS = 16  # 64 bits of sha256 per tensor: enough to tell weights apart


def tensor_digest(tensor: Tensor) -> str:
    """A short sha256 of ``tensor``'s dtype, shape and bytes."""
    data = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()
    digest = hashlib.sha256(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
    digest.update(data.tobytes())
    return digest.hexdigest()[:DIGEST_CHARS]


def state_digests(model: nn.Module) -> dict[str, str]:
    """``name -> digest`` for every tensor of ``model.state_dict()``."""
    return {k: tensor_digest(v) for k, v in model.state_dict().items() if isinstance(v, Tensor)}


def fingerprint(digests: Mapping[str, str], exclude: Iterable[str] = ()) -> str:
    """One sha256 over the ``digests`` (name and digest), leaving out the names in ``exclude``."""
    left_out = set(exclude)
    kept = sorted((k, v) for k, v in digests.items() if k not in left_out)
    return hashlib.sha256(json.dumps(kept).encode()).hexdigest()


@dataclass(frozen=True)
class ConversionRecord:
    """What a conversion started from: the base's class, its tensor digests, and the plan."""

    base_class: str  # e.g. "torchvision.models.resnet.ResNet"
    digests: dict[str, str]  # the base's state_dict, name -> tensor_digest, before conversion
    plan: object  # the ConversionPlan carried out (without its example batch and output)


def record_conversion(model: nn.Module, digests: dict[str, str], plan: object) -> None:
    """Attach a :class:`ConversionRecord` to ``model`` (``digests`` taken before converting)."""
    cls = type(model)
    record = ConversionRecord(f"{cls.__module__}.{cls.__qualname__}", digests, plan)
    object.__setattr__(model, ATTRIBUTE, record)


def conversion_record(model: nn.Module) -> ConversionRecord | None:
    """The record :func:`kdna.convert` left on ``model``, or ``None`` if it has none."""
    record = model.__dict__.get(ATTRIBUTE)
    return record if isinstance(record, ConversionRecord) else None
