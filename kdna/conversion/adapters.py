"""Adapter files: only what differs from the base network, in safetensors plus a small JSON.

peft users keep an adapter as a small file they save, share and load onto the base network;
:func:`save_adapters` and :func:`load_adapters` do that for kdna. A model converted by
:func:`kdna.convert` (typically with :meth:`ConvertConfig.adapters`, adapters in place) keeps a
record of its base (:mod:`kdna.conversion.record`): a digest of every tensor before conversion
and the plan carried out. :func:`save_adapters` writes into a folder

* ``kdna_adapters.safetensors``: every child's adapter (static scales, own bias, gate), every
  trainable parameter outside the children (after :func:`kdna.adapter_only`: the norms and
  the head) and every other tensor whose value is no longer the base's (running statistics,
  a kernel that was trained after all);
* ``kdna_adapters.json``: the conversion plan (every layer's settings,
  :meth:`ConversionPlan.to_json <kdna.conversion.plan.ConversionPlan.to_json>`), the base's
  class and per-tensor digests with one fingerprint over the tensors the file does not
  replace, and the sha256 of the safetensors file (so a torn or edited pair is refused).

Each file is written to a temporary name and renamed into place, the JSON last.
:func:`load_adapters` checks the base first (same tensor names, same weights wherever the
file relies on them), then applies the plan to it and loads the tensors: a base that does not
match is refused with a ``ValueError`` that says which tensors differ, before it is changed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from pathlib import Path

from torch import Tensor, nn

from kdna._checks import path_arg
from kdna._extras import require
from kdna._files import read_record, write_atomically
from kdna.conversion.convert import apply_plan
from kdna.conversion.layers import check_not_converted
from kdna.conversion.plan import ConversionPlan
from kdna.conversion.record import conversion_record, fingerprint, state_digests, tensor_digest
from kdna.nn.conv import KernelChild

__all__ = ["CONFIG_FILE", "FORMAT", "TENSORS_FILE", "adapter_state", "load_adapters",
           "save_adapters"]

FORMAT, VERSION = "kdna-adapters", 2
TENSORS_FILE, CONFIG_FILE = "kdna_adapters.safetensors", "kdna_adapters.json"
_SKIP = ""  # a shared parent seen through one of its children: saved under its own name


def _base_key(key: str, children: dict[str, KernelChild], own: set[str]) -> str | None:
    """The base tensor that ``key`` of the converted model stands for; ``None`` for a tensor
    the base does not have (an adapter's), ``_SKIP`` for a shared parent seen via a child."""
    parts = key.split(".")
    for i in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:i])
        if prefix in children:
            if parts[i] != "parent":
                return None  # filter_scale, spatial_scale, the child's bias, its gate
            return ".".join([prefix, *parts[i + 1:]]) if prefix in own else _SKIP
    return key


def adapter_state(model: nn.Module) -> tuple[dict[str, Tensor], dict[str, str | None]]:
    """What :func:`save_adapters` writes: ``(tensors, replaces)``, where ``replaces`` maps each
    saved name to the base tensor it replaces (``None`` for an adapter's own tensor)."""
    record = conversion_record(model)
    if record is None:
        raise ValueError(
            f"{type(model).__name__} carries no record of the base it was converted from; "
            "convert it with kdna.convert(model, kdna.ConvertConfig.adapters()) (or load "
            "adapters onto it with kdna.load_adapters) before saving its adapters")
    children = {n: m for n, m in model.named_modules() if isinstance(m, KernelChild)}
    if any(child.is_folded for child in children.values()):
        raise ValueError("the model is folded for deployment; call kdna.unfold(model) before "
                         "saving its adapters")
    own = set(record.plan.own)
    trainable = {n for n, p in model.named_parameters(remove_duplicate=False) if p.requires_grad}
    tensors: dict[str, Tensor] = {}
    replaces: dict[str, str | None] = {}
    for key, value in model.state_dict().items():
        if not isinstance(value, Tensor):
            continue  # a gate's extra state: its form is in the plan
        base = _base_key(key, children, own)
        kept = base is None or (key in trainable and base == key)  # a kernel: only if changed
        if base == _SKIP or not (kept or record.digests.get(base) != tensor_digest(value)):
            continue
        if base is not None and base not in record.digests:
            raise ValueError(f"{key!r} is neither an adapter nor a tensor of the base "
                             f"{record.base_class}; modules added after conversion cannot be "
                             "saved as adapters: save the whole model")
        tensors[key] = value.detach().to("cpu").contiguous().clone()
        replaces[key] = base
    return tensors, replaces


def save_adapters(model: nn.Module, path: str | os.PathLike) -> Path:
    """Write ``model``'s adapters, and what else differs from its base, into the folder ``path``.

    ``model`` must have been converted by :func:`kdna.convert` (or have had adapters loaded by
    :func:`load_adapters`). The folder is created if needed; existing adapter files in it are
    replaced atomically. Returns the folder.

    Raises:
        ValueError: the model carries no record of its base, is folded, or holds tensors its
            base does not have outside its children. ``TypeError``: a wrong argument type.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    folder = Path(path_arg("path", path))
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"path must be a folder for the adapter files, got the file {folder}")
    safetensors = require("safetensors.torch", None, "kdna.save_adapters")
    tensors, replaces = adapter_state(model)
    record = conversion_record(model)
    blob = safetensors.save(tensors, metadata={"format": FORMAT})
    replaced = [b for b in replaces.values() if b is not None]
    meta = {
        "format": FORMAT, "version": VERSION,
        "base": {"class": record.base_class, "tensors": record.digests,
                 "fingerprint": fingerprint(record.digests, replaced)},
        "plan": record.plan.to_json(),
        "replaces": replaces,
        "tensors": {"file": TENSORS_FILE, "sha256": hashlib.sha256(blob).hexdigest(),
                    "count": len(tensors), "numel": sum(t.numel() for t in tensors.values())},
    }
    folder.mkdir(parents=True, exist_ok=True)
    write_atomically(folder / TENSORS_FILE, lambda file: file.write(blob))
    text = json.dumps(meta, indent=1).encode()
    write_atomically(folder / CONFIG_FILE, lambda file: file.write(text))
    return folder


def _read(folder: Path) -> tuple[dict, bytes]:
    """The JSON and the safetensors bytes of an adapter folder, checked against each other."""
    config, tensors = folder / CONFIG_FILE, folder / TENSORS_FILE
    for file in (config, tensors):
        if not file.is_file():
            raise FileNotFoundError(f"no adapter file {file}: expected a folder written by "
                                    f"kdna.save_adapters, with {CONFIG_FILE} and {TENSORS_FILE}")
    meta = read_record(config, FORMAT, VERSION, "adapter", older=(
        " (version 1 files, whose plan held groups but not each layer's settings, are not "
        "read: convert and save the adapters again)"))
    blob = tensors.read_bytes()
    if hashlib.sha256(blob).hexdigest() != meta["tensors"]["sha256"]:
        raise ValueError(f"{tensors} does not match {config} (its sha256 differs): the pair was "
                         "not written together, or was changed since; save the adapters again")
    return meta, blob


def _check_base(base: nn.Module, meta: dict, tensors: dict[str, Tensor], where: Path) -> None:
    """A ``ValueError`` unless ``base`` is the network the adapters in ``where`` were made for."""
    expected, digests = meta["base"]["tensors"], state_digests(base)
    made_for = f"the adapters in {where} were made for a {meta['base']['class']}"
    missing, unexpected = sorted(set(expected) - set(digests)), sorted(set(digests) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{made_for}, and this {type(base).__name__} has another architecture: "
                         f"{len(missing)} of its tensors missing (e.g. {missing[:3]}), "
                         f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
    state = base.state_dict()
    for key, name in meta["replaces"].items():
        if name is not None and tuple(state[name].shape) != tuple(tensors[key].shape):
            raise ValueError(f"{made_for} whose {name!r} has shape {list(tensors[key].shape)}; "
                             f"this base's has {list(state[name].shape)} (e.g. another number "
                             "of classes: build the base with the same head)")
    replaced = {b for b in meta["replaces"].values() if b is not None}
    if fingerprint(digests, replaced) != meta["base"]["fingerprint"]:
        differ = sorted(k for k in expected if k not in replaced and digests[k] != expected[k])
        raise ValueError(f"{made_for} with other weights: {len(differ)} of the "
                         f"{len(expected) - len(replaced)} base tensors they rely on differ "
                         f"(e.g. {differ[:3]}); load them onto the same pretrained base")


def _with_metadata(tensors: dict[str, Tensor], model: nn.Module) -> OrderedDict[str, Tensor]:
    """``tensors`` as a state dict that carries ``model``'s per-module metadata.

    ``load_state_dict`` hands each module its entry of ``state_dict._metadata`` (its state
    format ``version``); versioned modules (torchvision's MNASNet, BatchNorm) read it in
    ``_load_from_state_dict`` and some refuse to load without it. The file's tensors were
    written by the same modules the plan has just built on ``model``, so ``model``'s own
    metadata is theirs.
    """
    state = OrderedDict(tensors)
    state._metadata = model.state_dict()._metadata  # type: ignore[attr-defined]
    return state


def load_adapters(base: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Apply the adapters saved by :func:`save_adapters` in the folder ``path`` to ``base``, in
    place: its conversion plan is carried out, then the saved tensors are loaded. Returns
    ``base``, which then computes what the saved model did.

    Raises:
        ValueError: ``base`` is already converted, has another architecture or other weights
            than the base the adapters were made for, or the files are not a matching pair;
            ``base`` is unchanged when this is raised. ``FileNotFoundError``: no adapter files.
    """
    if not isinstance(base, nn.Module):
        raise TypeError(f"base must be an nn.Module, got {type(base).__name__}")
    folder = Path(path_arg("path", path))
    safetensors = require("safetensors.torch", None, "kdna.load_adapters")
    meta, blob = _read(folder)
    check_not_converted(base)
    tensors = safetensors.load(blob)
    _check_base(base, meta, tensors, folder)
    apply_plan(base, ConversionPlan.from_json(meta["plan"]))
    result = base.load_state_dict(_with_metadata(tensors, base), strict=False)
    if result.unexpected_keys:  # the plan was applied, so every saved name exists
        raise ValueError(f"{folder} holds tensors this model lacks: {result.unexpected_keys[:3]}")
    return base
