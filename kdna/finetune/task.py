"""A fine-tuned task as a small folder beside the pretrained network, and loading it back.

What a task stores is only what fine-tuning changed, plus what is needed to use it:

* for a KernelDNA method, the :func:`kdna.save_adapters` files (adapters, norms, head, with
  the conversion plan and digests of the base they were made for);
* for any other method, ``kdna_task.safetensors``: every tensor that differs from the network
  right after preparing (the pretrained base with its new head, LoRA's initial matrices);
* ``kdna_task.json`` (written last): the method and its settings, the seed it was prepared
  with, the base (its registered ``arch`` and ``weights``, or its class), the class names, and
  the input the network expects (image size, mean, std, and how images were resized).

:func:`load_task` rebuilds the trained network on a fresh base (built from ``arch`` or given)
and returns a :class:`Task` that predicts on image files; its outputs equal the network's at
the end of training (the tests check this). :func:`task_bytes` is what a task's tensors weigh,
the "task file" column of the fine-tuning tables.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from kdna._checks import module_arg, path_arg, positive_int
from kdna._extras import require
from kdna._files import read_record, write_atomically
from kdna.conversion.adapters import load_adapters, save_adapters
from kdna.data.imagefiles import read_image
from kdna.data.transforms import image_transform
from kdna.finetune.methods import MethodContext, get_method, inference_form, prepare
from kdna.models import create_model

__all__ = ["TASK_FILE", "TENSORS_FILE", "Task", "changed_tensors", "load_task", "save_task",
           "task_bytes"]

TASK_FILE, TENSORS_FILE, FORMAT, VERSION = "kdna_task.json", "kdna_task.safetensors", "kdna-task", 1


def changed_tensors(model: nn.Module, initial: dict[str, Tensor]) -> dict[str, Tensor]:
    """Every tensor of ``model``'s state that is not in ``initial`` or differs from it, on the
    CPU and contiguous (what safetensors stores)."""
    return {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()
            if isinstance(v, Tensor)
            and (k not in initial or not torch.equal(v.detach().cpu(), initial[k].cpu()))}


def _write_tensors(model: nn.Module, initial: dict[str, Tensor], adapter_files: bool,
                   folder: Path) -> list[Path]:
    """The task's tensor files, written into ``folder``."""
    if adapter_files:
        saved = save_adapters(model, folder)
        return sorted(p for p in saved.iterdir() if p.name.startswith("kdna_adapters"))
    safetensors = require("safetensors.torch", None, "saving a fine-tuned task")
    blob = safetensors.save(changed_tensors(model, initial), metadata={"format": FORMAT})
    folder.mkdir(parents=True, exist_ok=True)
    write_atomically(folder / TENSORS_FILE, lambda file: file.write(blob))
    return [folder / TENSORS_FILE]


def task_bytes(model: nn.Module, initial: dict[str, Tensor], adapter_files: bool,
               scratch: Path) -> int:
    """Bytes of the tensor files a task of ``model`` stores (written under ``scratch``)."""
    files = _write_tensors(model, initial, adapter_files, Path(scratch) / "task")
    return sum(f.stat().st_size for f in files)


def save_task(folder: str | os.PathLike, model: nn.Module, initial: dict[str, Tensor],
              meta: dict[str, Any]) -> Path:
    """Write the task of ``model`` (trained from the state ``initial``) into ``folder``.

    ``meta`` holds ``method``, ``seed``, ``classes``, ``arch`` (or None), ``weights``,
    ``base_class``, ``image_size``, ``mean``, ``std`` and ``resize`` (``"crop"`` or
    ``"whole"``); :func:`kdna.finetune.FinetuneResult.save` fills it in."""
    folder = Path(path_arg("folder", folder))
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"a task is a folder; {folder} is a file")
    method = get_method(meta["method"])
    files = _write_tensors(model, initial, method.adapter_files, folder)
    record = {"format": FORMAT, "version": VERSION, **meta, "method": method.name,
              "settings": dict(method.settings), "adapter_files": method.adapter_files,
              "files": [f.name for f in files]}
    text = json.dumps(record, indent=1).encode()
    write_atomically(folder / TASK_FILE, lambda file: file.write(text))
    return folder


def _read_meta(folder: Path) -> dict[str, Any]:
    path = folder / TASK_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {TASK_FILE} in {folder}: expected a folder written by "
                                f"kdna.finetune(...).save(...) or `kdna finetune --out`")
    return read_record(path, FORMAT, VERSION, "task")


def _base(meta: dict[str, Any], base: nn.Module | None, folder: Path) -> nn.Module:
    if base is not None:
        return copy.deepcopy(module_arg("base", base))
    if meta.get("arch") is None:
        raise ValueError(f"the task in {folder} was fine-tuned from a {meta['base_class']} "
                         f"that is not a registered arch: pass that pretrained network as "
                         f"load_task(folder, base=...)")
    return create_model(meta["arch"], kernel_dna=False, weights=meta["weights"])


def _rebuild(meta: dict[str, Any], base: nn.Module, folder: Path) -> nn.Module:
    """The trained network: ``base`` prepared as the method prepared it, the task loaded."""
    size = meta["image_size"]
    context = MethodContext(num_classes=len(meta["classes"]),
                            example_inputs=torch.zeros(2, 3, size, size), seed=meta["seed"])
    if get_method(meta["method"]).adapter_files:
        return load_adapters(context.new_head(base), folder)
    model = prepare(meta["method"], base, context).model
    safetensors = require("safetensors.torch", None, "loading a fine-tuned task")
    tensors = safetensors.load((folder / TENSORS_FILE).read_bytes())
    state = model.state_dict()
    wrong = [k for k, v in tensors.items() if k not in state or state[k].shape != v.shape]
    if wrong:
        raise ValueError(f"the task in {folder} does not fit this base: {len(wrong)} of its "
                         f"tensors have no place of that shape in it (e.g. {wrong[:3]})")
    model.load_state_dict(tensors, strict=False)
    return inference_form(model)


@dataclass
class Task:
    """A fine-tuned network ready for inference, with its classes and input transform."""

    model: nn.Module  # in eval mode
    classes: list[str]
    meta: dict[str, Any]  # what kdna_task.json holds

    def transform(self):
        """The evaluation transform of the training data: file or PIL image -> tensor."""
        meta = self.meta
        return image_transform(False, small=meta["resize"] == "whole", flip=False,
                               size=meta["image_size"], channels=3, mean=meta["mean"],
                               std=meta["std"])

    @torch.no_grad()
    def predict(self, images: Sequence[str | os.PathLike | Any], topk: int = 5
                ) -> list[list[tuple[str, float]]]:
        """For each image (a path or a PIL image), its ``topk`` classes and probabilities."""
        positive_int("topk", topk)
        transform = self.transform()
        batch = torch.stack([transform(read_image(x) if isinstance(x, str | os.PathLike)
                                       else x) for x in images])
        device = next(self.model.parameters()).device
        probs = self.model(batch.to(device)).float().softmax(dim=1).cpu()
        top = probs.topk(min(topk, probs.shape[1]), dim=1)
        return [[(self.classes[i], float(p)) for p, i in zip(row_p, row_i, strict=True)]
                for row_p, row_i in zip(top.values.tolist(), top.indices.tolist(), strict=True)]


def load_task(folder: str | os.PathLike, base: nn.Module | None = None, *,
              device: torch.device | str | None = None) -> Task:
    """The task saved in ``folder``, on a fresh copy of its pretrained base: built from its
    registered arch, or ``base`` (the same pretrained network, left unchanged). Raises a
    ``ValueError`` naming what differs when the base is not the one the task was made for."""
    folder = Path(path_arg("folder", folder))
    meta = _read_meta(folder)
    model = _rebuild(meta, _base(meta, base, folder), folder).eval()
    if device is not None:
        model.to(device)
    return Task(model, list(meta["classes"]), meta)
