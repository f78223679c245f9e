"""Redundancy, measured: kernel similarity and linear CKA between a network's layers.

KernelDNA rests on the observation, checkable here on any network, that same-shaped layers
are redundant: similar kernels (:func:`kernel_similarity`), similar representations (linear
CKA, :func:`cka_matrix`; debiased by default, see :mod:`kdna.analysis.cka`). Each measure
has its null in :mod:`kdna.analysis.nulls`. Plain torch; figures live in :mod:`kdna.viz`.
Functions that run the model do so in eval mode without gradients, through forward hooks that
are always removed (also when the forward pass raises), and restore every module's train/eval
mode.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdna._checks import int_at_least, module_arg
from kdna._extras import require
from kdna.analysis.cka import MIN_SAMPLES, CKAAccumulator, hsic
from kdna.analysis.hooks import detached_output, hooked, input_batches, resolve_layers
from kdna.nn.conv import ChildConv2d, KernelChild
from kdna.nn.linear import ChildLinear

__all__ = ["MAX_FEATURES", "Similarity", "cka_matrices", "cka_matrix", "kernel_cosine_matrix",
           "kernel_similarity", "layer_activations", "linear_cka"]

MAX_FEATURES = 4096  # cka_matrix pools each layer's activations down to this many per sample


@dataclass
class Similarity:
    """A square layer-by-layer similarity matrix."""

    names: list[str]  # layer (module) names, in model order
    matrix: Tensor  # [n, n] float32 on the CPU, NaN where a pair is not comparable
    kind: str  # "kernel cosine", "kernel cosine (aligned)", "linear CKA", "debiased linear CKA"


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
    module_arg("model", model)
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
    module_arg("model", model)
    resolved = resolve_layers(model, layers, lambda m: isinstance(m, nn.Conv2d | ChildConv2d)
                        and m.groups == 1 and m.out_channels > 1)
    if not resolved:
        raise ValueError(f"{type(model).__name__} has no nn.Conv2d with groups=1 and more than "
                         "one output filter; name the layers to compare")
    matrix = kernel_cosine_matrix([_kernel(n, m) for n, m in resolved.items()], align=align)
    kind = "kernel cosine (aligned)" if align else "kernel cosine"
    return Similarity(list(resolved), matrix.float(), kind)


def kernel_cosine_matrix(kernels: Sequence[Tensor], *, align: bool = False) -> Tensor:
    """``[L, L]`` float64 cosine between every pair of same-shaped ``kernels`` (NaN across
    shapes and for all-zero kernels), the filters aligned as in :func:`kernel_similarity`."""
    kernels = [k.detach().to(torch.float64) for k in kernels]
    count = len(kernels)
    matrix = torch.full((count, count), math.nan, dtype=torch.float64)
    for i, a in enumerate(kernels):
        matrix[i, i] = 1.0 if torch.any(a != 0) else math.nan
        for j in range(i + 1, count):
            b = kernels[j]
            if a.shape == b.shape:
                matrix[i, j] = matrix[j, i] = _cosine(a, _align_filters(a, b) if align else b)
    return matrix


# -- centred kernel alignment --------------------------------------------------------------

def _samples(t: object, label: str) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{label} must be a Tensor of activations [n, ...], got {type(t).__name__}")
    if t.dim() == 0 or t.numel() == 0:
        raise ValueError(f"{label} must be activations [n, ...] with n >= 2 samples and at least "
                         f"one feature, got shape {list(t.shape)}")
    return t.detach().reshape(t.shape[0], -1).to(torch.float64)


def linear_cka(x: Tensor, y: Tensor, *, debiased: bool = True) -> float:
    """Linear centred kernel alignment between two sets of activations of the same inputs.

    ``x`` ``[n, ...]`` and ``y`` ``[n, ...]`` are flattened to ``[n, p]`` and ``[n, q]`` and
    compared in float64 as ``HSIC(X, Y) / sqrt(HSIC(X, X) HSIC(Y, Y))``
    (:func:`kdna.analysis.cka.hsic`, never an ``n x n`` matrix when the features are narrow).

    ``debiased`` (the default) uses the unbiased HSIC (Song et al., 2012): about 0 for
    independent activations at any ``n >= 4``, so it can be slightly negative. With
    ``debiased=False``, the plain estimator of Kornblith et al. (2019), in [0, 1], which is
    biased towards 1 when ``n`` is small next to the number of features (about 0.99 for
    independent Gaussian features at ``n = 48, p = 4096``). Both are 1 for identical inputs,
    invariant to orthogonal transforms and isotropic scaling of either side, and NaN when one
    side does not vary across the samples.
    """
    x, y = _samples(x, "x"), _samples(y, "y")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must hold the same samples, got n = {x.shape[0]} and "
                         f"n = {y.shape[0]}")
    if x.shape[0] < MIN_SAMPLES[bool(debiased)]:
        raise ValueError(f"CKA needs at least 2 samples (4 for the debiased estimator), got "
                         f"{x.shape[0]}")
    xx, yy = hsic(x, x, debiased=debiased), hsic(y, y, debiased=debiased)
    if xx <= 0 or yy <= 0:
        return math.nan
    value = hsic(x, y, debiased=debiased) / math.sqrt(xx * yy)
    return min(1.0, max(0.0, value)) if not debiased else value


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


def _minibatches(inputs: object, batch_size: int) -> Iterator[Tensor]:
    if isinstance(inputs, Tensor):
        if inputs.dim() == 0:
            raise ValueError("inputs must be a batch [n, ...], got a scalar")
        # near-equal chunks, so that no minibatch is left with a handful of samples
        yield from torch.tensor_split(inputs, max(1, math.ceil(len(inputs) / batch_size)))
        return
    yield from input_batches(inputs)


def cka_matrices(model: nn.Module, inputs: Tensor | Iterable[Tensor | tuple],
                 layers: Sequence[str] | None = None, *, batch_size: int = 64,
                 permuted_seed: int | None = None) -> dict[str, Similarity]:
    """Debiased and plain linear CKA between every pair of layers, from one pass over ``inputs``.

    ``inputs``: one batch (split into near-equal minibatches of at most ``batch_size``) or an
    iterable of batches (a ``DataLoader`` of ``(x, y)``: ``x`` is taken), each of at least 4
    inputs. ``layers``: by default every ``nn.Conv2d`` with ``groups == 1`` and every KernelDNA
    child, in model order. Each output is average-pooled spatially inside its hook to at most
    :data:`MAX_FEATURES` features; HSIC is averaged over the minibatches (Nguyen, Raghu and
    Kornblith, 2021), so memory does not grow with the number of inputs.

    Returns ``{"debiased": ..., "plain": ...}``; with ``permuted_seed``, also
    ``"debiased, permuted"`` and ``"plain, permuted"``: the same activations with every layer's
    samples shuffled independently within each minibatch (a null: what the estimator gives
    for layers that share no information about the inputs).
    """
    module_arg("model", model)
    batch_size = int_at_least("batch_size", batch_size, MIN_SAMPLES[True])
    resolved = resolve_layers(model, layers, lambda m: isinstance(m, KernelChild)
                              or (isinstance(m, nn.Conv2d) and m.groups == 1))
    if not resolved:
        raise ValueError(f"{type(model).__name__} has no nn.Conv2d with groups=1 and no "
                         "KernelDNA child; name the layers to compare")
    actual, null = CKAAccumulator(), CKAAccumulator()
    generator = None if permuted_seed is None else torch.Generator().manual_seed(permuted_seed)
    for batch in _minibatches(inputs, batch_size):
        if batch.dim() == 0 or batch.shape[0] < MIN_SAMPLES[True]:
            raise ValueError(f"CKA needs batches of at least 4 inputs, got shape "
                             f"{list(batch.shape)}")
        acts = _capture(model, batch, resolved, _pooled)
        features = [acts[n].to(torch.float64) for n in resolved]
        actual.update(features)
        if generator is not None:
            null.update(features, generator=generator)
    if not actual.samples:
        raise ValueError("inputs held no batch")
    names = list(resolved)
    result = {}
    for debiased, label in ((True, "debiased"), (False, "plain")):
        kind = "debiased linear CKA" if debiased else "linear CKA"
        result[label] = Similarity(names, actual.compute(debiased=debiased).float(), kind)
        if generator is not None:
            result[f"{label}, permuted"] = Similarity(
                names, null.compute(debiased=debiased).float(), f"{kind} (samples permuted)")
    return result


def cka_matrix(model: nn.Module, inputs: Tensor | Iterable[Tensor | tuple],
               layers: Sequence[str] | None = None, *, debiased: bool = True,
               batch_size: int = 64) -> Similarity:
    """Linear CKA (:func:`linear_cka`) between the activations of every pair of layers.

    ``debiased`` (the default) gives the debiased estimator, ``debiased=False`` the plain one;
    ``inputs``, ``layers`` and ``batch_size`` as for :func:`cka_matrices`, which gives both
    estimators, and their sample-permuted nulls, from one pass.
    """
    module_arg("model", model)
    return cka_matrices(model, inputs, layers, batch_size=batch_size)[
        "debiased" if debiased else "plain"]
