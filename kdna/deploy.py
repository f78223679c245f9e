"""Deployment: the inference form of any network, ONNX export, and a check against eager.

:func:`deploy` gives every network the same treatment before it is timed or exported, so
comparisons stay fair: each BatchNorm that follows a convolution is folded into it, for
plain ``nn.Conv2d`` layers (``torch.nn.utils.fusion``) and for KernelDNA children
(:func:`kdna.fold`, which also computes each child's ``P * (1 + f) * (1 + s)`` once and
folds each gate's BatchNorm into its first layer). Convolutions whose kernel depends on the
input (CondConv, DY-Conv, ODConv) cannot take a BatchNorm in and keep theirs.

:func:`export_onnx` writes the deployed network with a dynamic batch axis and, by default,
runs the file with onnxruntime at several batch sizes and compares with eager PyTorch.
"""

from __future__ import annotations

import copy
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from kdna._checks import module_arg, non_negative_float, path_arg, positive_int
from kdna._extras import require
from kdna.nn.conv import KernelChild
from kdna.nn.fold import fold, following_norms

__all__ = ["OnnxCheck", "check_onnx", "deploy", "export_onnx"]


def deploy(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """The network's inference form (eval mode, BatchNorms folded); a copy unless ``inplace``.

    :func:`kdna.unfold` turns its KernelDNA children back into their trainable form, but
    fused plain convolutions do not come apart again (their BatchNorms are gone), which is
    why the default works on a copy.
    """
    module_arg("model", model)
    model = model if inplace else copy.deepcopy(model)
    model.eval()
    if any(isinstance(m, KernelChild) for m in model.modules()):
        fold(model)
    plain = following_norms(model, nn.Conv2d)
    for conv, (container, name) in plain.items():
        norm = getattr(container, name)
        fused = fuse_conv_bn_eval(conv, norm)
        # Swap the convolution where it runs, beside its norm; children that share its
        # kernel (KernelDNA parents) hold the unfused original, which unfold needs.
        for attr, module in list(container.named_children()):
            if module is conv:
                setattr(container, attr, fused)
        setattr(container, name, nn.Identity())  # one-way: kdna.unfold restores children only
    return model


@dataclass(frozen=True)
class OnnxCheck:
    """onnxruntime against eager PyTorch: the largest absolute difference per batch size."""

    path: Path
    max_abs_error: dict[int, float]
    tolerance: float

    @property
    def ok(self) -> bool:
        return all(err <= self.tolerance for err in self.max_abs_error.values())

    def __str__(self) -> str:
        errors = ", ".join(f"batch {b}: {e:.2e}" for b, e in self.max_abs_error.items())
        verdict = "ok" if self.ok else "MISMATCH"
        return f"{self.path.name}: {verdict} ({errors}; tolerance {self.tolerance:g})"


def _example_inputs(example_inputs: Tensor) -> Tensor:
    """``example_inputs``, checked: one input batch ``[B, C, H, W]``."""
    if not isinstance(example_inputs, Tensor) or example_inputs.dim() != 4:
        raise ValueError(f"example_inputs must be an input batch [B, C, H, W], got "
                         f"{getattr(example_inputs, 'shape', type(example_inputs).__name__)}")
    return example_inputs


def check_onnx(model: nn.Module, path: str | Path, example_inputs: Tensor, *,
               batch_sizes: tuple[int, ...] = (1, 3), tolerance: float = 1e-4) -> OnnxCheck:
    """Run the ONNX file at ``path`` with onnxruntime (CPU) and compare with ``model`` in eval
    mode, on random batches of the sizes in ``batch_sizes`` shaped like ``example_inputs``.
    """
    module_arg("model", model)
    path_arg("path", path)
    example_inputs = _example_inputs(example_inputs)
    tolerance = non_negative_float("tolerance", tolerance)
    batch_sizes = tuple(positive_int("batch_sizes", b) for b in batch_sizes)
    onnxruntime = require("onnxruntime", "export", "check_onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0].name
    generator = torch.Generator().manual_seed(0)
    model.eval()
    errors = {}
    for batch in batch_sizes:
        x = torch.randn(batch, *example_inputs.shape[1:], generator=generator)
        with torch.no_grad():
            expected = model(x.to(example_inputs.device)).float().cpu()
        (got,) = session.run(None, {feed: x.numpy()})
        if tuple(got.shape) != tuple(expected.shape):
            raise RuntimeError(f"ONNX output shape {list(got.shape)} differs from eager "
                               f"{list(expected.shape)} at batch {batch}")
        errors[batch] = (torch.from_numpy(got) - expected).abs().max().item()
    return OnnxCheck(Path(path), errors, tolerance)


def export_onnx(model: nn.Module, path: str | Path, example_inputs: Tensor, *,
                check: bool = True, batch_sizes: tuple[int, ...] = (1, 3),
                tolerance: float = 1e-4) -> OnnxCheck | None:
    """Export ``deploy(model)`` to ONNX with a dynamic batch axis; check it unless told not to.

    ``example_inputs`` is one input batch ([B, C, H, W]); height and width are fixed by it.
    The file is written to a temporary name and renamed, so a failed export leaves nothing
    behind. Raises ``RuntimeError`` when the check finds a difference above ``tolerance``.
    """
    module_arg("model", model)
    path_arg("path", path)
    example_inputs = _example_inputs(example_inputs)
    for module in ("onnx", "onnxscript", *(("onnxruntime",) if check else ())):
        require(module, "export", "export_onnx")  # torch's exporter, then the check
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    deployed = deploy(model).cpu().float()
    # traced at batch 2: an example of one image would make the exporter fix the batch at 1
    traced = example_inputs.detach().cpu().float()[:1].expand(2, -1, -1, -1).contiguous()
    handle, temporary = tempfile.mkstemp(suffix=".onnx", dir=path.parent)
    os.close(handle)
    try:
        batch = torch.export.Dim("batch", min=1, max=1 << 16)
        torch.onnx.export(deployed, (traced,), temporary, input_names=["images"],
                          output_names=["logits"], dynamic_shapes=({0: batch},),
                          dynamo=True, external_data=False, verbose=False)
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)
    if not check:
        return None
    result = check_onnx(deployed, path, traced, batch_sizes=batch_sizes, tolerance=tolerance)
    if not result.ok:
        raise RuntimeError(f"exported model disagrees with eager PyTorch: {result}")
    return result
