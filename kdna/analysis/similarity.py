"""Redundancy, measured: kernel similarity and linear CKA between a network's layers.

KernelDNA rests on the observation, checkable here on any network, that same-shaped layers
are redundant: similar kernels (:func:`kernel_similarity`), similar representations (linear
CKA, :func:`cka_matrix`). Plain torch; figures live in :mod:`kdna.viz`. Functions that run
the model do so in eval mode without gradients, through forward hooks that are always removed
(also when the forward pass raises), and restore every module's train/eval mode.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdna._extras import require
from kdna.analysis.hooks import detached_output, hooked, resolve_layers
from kdna.nn.conv import ChildConv2d, KernelChild
from kdna.nn.linear import ChildLinear

__all__ = ["MAX_FEATURES", "Similarity", "cka_matrix", "kernel_similarity", "layer_activations",
           "linear_cka"]

MAX_FEATURES = 4096  # cka_matrix pools each layer's activations down to this many per sample
_GRAM_SAMPLES = 512  # up to this batch size cka_matrix keeps one n x n Gram matrix per layer


@dataclass
class Similarity:
    """A square layer-by-layer similarity matrix."""

    names: list[str]  # layer (module) names, in model order
    matrix: Tensor  # [n, n] float32 on the CPU, NaN where a pair is not comparable
    kind: str  # "kernel cosine", "kernel cosine (aligned)" or "linear CKA"


# -- finding layers ------------------------------------------------------------------------

def _check_batch(inputs: object) -> Tensor:
    if not isinstance(inputs, Tensor):
        raise TypeError(f"inputs must be one batch as a Tensor, got {type(inputs).__name__}")
    return inputs


def _capture(model: nn.Module, inputs: Tensor, modules: dict[str, nn.Module],
             transform: Callable[[nn.Module, Tensor], Tensor]) -> dict[str, Tensor]:
    """``transform(module, output)`` of each named module's first output for one batch."""
    store: dict[str, Tensor] = {}

    def record(name: str, module: nn.Module, out: object) -> None:
        if name not in store:  # a module run twice in one pass keeps its first output
            store[name] = transform(module, detached_output(name, out))

    with hooked(model, modules, record) as device:
        model(_check_batch(inputs).to(device))
    missing = [n for n in modules if n not in store]
    if missing:
        raise ValueError(f"layers {missing} did not run during the forward pass")
    return {n: store[n] for n in modules}


def layer_activations(model: nn.Module, inputs: Tensor, layers: Sequence[str]
                      ) -> dict[str, Tensor]:
    """The outputs (on the CPU) of the named modules for one batch, moved to the model's device
    and run once; a module that runs more than once per forward pass gives its first output."""
    return _capture(model, inputs, resolve_layers(model, layers, None), lambda _m, out: out.cpu())


# -- kernel similarity ---------------------------------------------------------------------

def _kernel(name: str, module: nn.Module) -> Tensor:
    if isinstance(module, KernelChild):
        return module.static_weight().detach()
    weight = getattr(module, "weight", None)
    if not isinstance(weight, Tensor) or weight.dim() < 2:
        raise TypeError(f"layer {name!r} ({type(module).__name__}) has no kernel: expected a "
                        f"convolution, a Linear, a ParentKernel or a KernelDNA child")
    return weight.detach()


def _cosine(a: Tensor, b: Tensor) -> float:
    norms = torch.linalg.vector_norm(a) * torch.linalg.vector_norm(b)
    return float((a.flatten() @ b.flatten()) / norms) if norms > 0 else math.nan


def _align_filters(reference: Tensor, other: Tensor) -> Tensor:
    """``other``'s output filters reordered and sign-flipped to best match ``reference``'s."""
    # only this function needs scipy (the filter matching of align=True)
    linear_sum_assignment = require("scipy.optimize", "analysis",
                                    "kernel_similarity(align=True)").linear_sum_assignment

    cos = F.normalize(reference.flatten(1), dim=1) @ F.normalize(other.flatten(1), dim=1).T
    rows, cols = linear_sum_assignment(cos.abs().cpu().numpy(), maximize=True)
    rows, cols = torch.as_tensor(rows, device=cos.device), torch.as_tensor(cols, device=cos.device)
    sign = torch.where(cos[rows, cols] < 0, -1.0, 1.0).to(other)
    return other[cols] * sign.view(-1, *[1] * (other.dim() - 1))


def kernel_similarity(model: nn.Module, *, layers: Sequence[str] | None = None,
                      align: bool = False) -> Similarity:
    """Cosine similarity between the flattened kernels of every pair of same-shaped layers.

    ``layers`` names the modules (convolutions, Linears, ParentKernels, children); by default
    every ``nn.Conv2d`` and ``ChildConv2d`` with ``groups == 1`` and more than one output
    filter, in model order. A KernelDNA child counts with ``child.static_weight()``. Pairs of
    different shape (and all-zero kernels) are NaN.

    ``align``: a layer's output filters are in arbitrary order (permuting them, and the next
    layer's input channels with them, gives the same network), so two layers holding the same
    filters can still score near 0. With ``align=True`` the second layer's filters are first
    matched one-to-one to the first's (the assignment maximising the summed |cosine| of the
    matched filters) and flipped in sign where that cosine is negative. Input channels are not
    permuted: they follow whatever each layer reads.
    """
    resolved = resolve_layers(model, layers, lambda m: isinstance(m, nn.Conv2d | ChildConv2d)
                        and m.groups == 1 and m.out_channels > 1)
    if not resolved:
        raise ValueError(f"{type(model).__name__} has no nn.Conv2d with groups=1 and more than "
                         "one output filter; name the layers to compare")
    kernels = [_kernel(n, m).to(torch.float64) for n, m in resolved.items()]
    count = len(kernels)
    matrix = torch.full((count, count), math.nan, dtype=torch.float64)
    for i, a in enumerate(kernels):
        matrix[i, i] = 1.0 if torch.any(a != 0) else math.nan
        for j in range(i + 1, count):
            b = kernels[j]
            if a.shape == b.shape:
                matrix[i, j] = matrix[j, i] = _cosine(a, _align_filters(a, b) if align else b)
    kind = "kernel cosine (aligned)" if align else "kernel cosine"
    return Similarity(list(resolved), matrix.float(), kind)


# -- centred kernel alignment --------------------------------------------------------------

def _samples(t: object, label: str) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{label} must be a Tensor of activations [n, ...], got {type(t).__name__}")
    if t.dim() == 0 or t.numel() == 0:
        raise ValueError(f"{label} must be activations [n, ...] with n >= 2 samples and at least "
                         f"one feature, got shape {list(t.shape)}")
    return t.detach().reshape(t.shape[0], -1).to(torch.float64)


def _centred(x: Tensor) -> Tensor:
    x = x - x.mean(dim=0)
    norm = torch.linalg.vector_norm(x)  # CKA ignores scale; unit norm keeps the sums tame
    return x / norm if norm > 0 else x


def _cka_centred(x: Tensor, y: Tensor) -> float:
    n, p, q = x.shape[0], x.shape[1], y.shape[1]
    if p * q + p * p + q * q <= n * (p + q + 1):  # feature-space form is cheaper
        cross = (y.T @ x).square().sum()
        xx, yy = torch.linalg.matrix_norm(x.T @ x), torch.linalg.matrix_norm(y.T @ y)
    else:  # Gram form: <XX^T, YY^T> / (|XX^T| |YY^T|)
        k, l_ = x @ x.T, y @ y.T
        cross, xx, yy = (k * l_).sum(), torch.linalg.matrix_norm(k), torch.linalg.matrix_norm(l_)
    if xx == 0 or yy == 0:
        return math.nan
    return float((cross / (xx * yy)).clamp(0.0, 1.0))


def linear_cka(x: Tensor, y: Tensor) -> float:
    """Linear centred kernel alignment between two sets of activations of the same inputs.

    ``x`` ``[n, ...]`` and ``y`` ``[n, ...]`` are flattened to ``[n, p]`` and ``[n, q]``,
    centred over the samples, and compared in float64 as
    ``||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)`` (or its equal Gram form
    ``<XX^T, YY^T> / (||XX^T|| ||YY^T||)``, whichever is cheaper). The result lies in [0, 1],
    is invariant to orthogonal transforms and isotropic scaling of either side, and is NaN
    when one side does not vary across the samples.
    """
    x, y = _samples(x, "x"), _samples(y, "y")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must hold the same samples, got n = {x.shape[0]} and "
                         f"n = {y.shape[0]}")
    if x.shape[0] < 2:
        raise ValueError(f"CKA needs at least 2 samples, got {x.shape[0]}")
    return _cka_centred(_centred(x), _centred(y.to(x.device)))


def _pooled(module: nn.Module, out: Tensor, limit: int = MAX_FEATURES) -> Tensor:
    """``out`` as ``[n, features]`` with at most ``limit`` features, by spatial average pooling
    (channels are never mixed, so a layer wider than ``limit`` keeps one value per channel)."""
    out = out.float()
    if out.dim() <= 2:
        return out.reshape(out.shape[0], -1)
    if isinstance(module, nn.Linear | ChildLinear):  # channels-last [n, ..., C]
        out = out.movedim(-1, 1)
    channels, spatial = out.shape[1], out.shape[2:]
    positions = math.prod(spatial)
    if channels * positions > limit:
        allowed = max(1, limit // channels)
        if len(spatial) == 2:
            height, width = spatial
            rows = max(1, min(height, math.floor(height * math.sqrt(allowed / positions))))
            out = F.adaptive_avg_pool2d(out, (rows, max(1, min(width, allowed // rows))))
        else:
            out = F.adaptive_avg_pool1d(out.flatten(2), allowed)
    return out.reshape(out.shape[0], -1)


def cka_matrix(model: nn.Module, inputs: Tensor, layers: Sequence[str] | None = None
               ) -> Similarity:
    """Linear CKA (:func:`linear_cka`) between the activations of every pair of layers.

    ``inputs`` is one batch, the samples CKA compares (64 or more is sensible); ``layers`` by
    default every ``nn.Conv2d`` with ``groups == 1`` and every KernelDNA child, in model order.
    To bound memory, each output is average-pooled spatially inside its hook to at most
    :data:`MAX_FEATURES` (4096) features per sample; CKA compares the pooled representations.
    """
    resolved = resolve_layers(model, layers, lambda m: isinstance(m, KernelChild)
                        or (isinstance(m, nn.Conv2d) and m.groups == 1))
    if not resolved:
        raise ValueError(f"{type(model).__name__} has no nn.Conv2d with groups=1 and no "
                         "KernelDNA child; name the layers to compare")
    if _check_batch(inputs).dim() == 0 or inputs.shape[0] < 2:
        raise ValueError(f"CKA needs a batch of at least 2 inputs, got shape {list(inputs.shape)}")
    acts = _capture(model, inputs, resolved, _pooled)
    features = [_centred(acts[n].cpu().to(torch.float64)) for n in resolved]
    count, samples = len(features), features[0].shape[0]
    if samples <= _GRAM_SAMPLES:  # one normalised n x n Gram matrix per layer
        grams = torch.stack([(x @ x.T).flatten() for x in features])
        norms = torch.linalg.vector_norm(grams, dim=1)
        grams = grams / norms.clamp_min(1e-300)[:, None]
        matrix = (grams @ grams.T).clamp(0.0, 1.0)
        matrix[(norms == 0)[:, None] | (norms == 0)[None, :]] = math.nan
    else:
        matrix = torch.empty(count, count, dtype=torch.float64)
        for i in range(count):
            for j in range(i, count):
                matrix[i, j] = matrix[j, i] = _cka_centred(features[i], features[j])
    diagonal = matrix.diagonal()
    diagonal.copy_(torch.where(diagonal.isnan(), diagonal, 1.0))
    return Similarity(list(resolved), matrix.float(), "linear CKA")
