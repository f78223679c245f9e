"""Linear CKA estimators: the debiased one (unbiased HSIC) and the plain one, accumulated
over minibatches.

The plain estimator (Kornblith et al., 2019) is biased towards 1 when the number of samples
``n`` is small next to the number of features ``p``: independent Gaussian features give about
0.99 at ``n = 48, p = 4096``. The debiased estimator replaces each HSIC by its unbiased form
(Song et al., 2012), whose expectation is 0 for independent features. Following Nguyen, Raghu
and Kornblith (ICLR 2021), HSIC is averaged over minibatches before the ratio is taken, so
thousands of samples need only one ``b x b`` Gram matrix per layer and minibatch.

:func:`hsic` works on one pair of feature matrices (feature-space form when that is cheaper,
so it never builds an ``n x n`` matrix for narrow features); :class:`CKAAccumulator` keeps the
running HSIC sums of every pair of layers. Everything is computed in float64.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["MIN_SAMPLES", "CKAAccumulator", "cka_from_hsic", "hsic", "hsic_matrix"]

MIN_SAMPLES = {True: 4, False: 2}  # debiased -> the fewest samples the estimator accepts


def _flat(x: Tensor) -> Tensor:
    x = x.detach().reshape(x.shape[0], -1).to(torch.float64)
    return x - x.mean(dim=0)  # both estimators ignore a shift; centring keeps the sums small


def hsic(x: Tensor, y: Tensor, *, debiased: bool = True) -> float:
    """The linear-kernel HSIC of two feature matrices ``[n, p]`` and ``[n, q]`` of the same
    samples: unbiased (Song et al., 2012) or, with ``debiased=False``, the plain
    ``tr(K H L H) / (n - 1)^2``. Up to the normalisation, the numerator of CKA."""
    x, y = _flat(x), _flat(y).to(x.device)
    n, p, q = x.shape[0], x.shape[1], y.shape[1]
    if p * q <= n * (p + q):  # feature-space form: cheaper, and no n x n matrix
        trace = (y.T @ x).square().sum()
        kd, ld = x.square().sum(dim=1), y.square().sum(dim=1)  # the Gram diagonals
        k_rows, l_rows = x @ x.sum(dim=0) - kd, y @ y.sum(dim=0) - ld  # K~1, L~1
    else:
        k, l_ = x @ x.T, y @ y.T
        trace = (k * l_).sum()
        kd, ld = k.diagonal(), l_.diagonal()
        k_rows, l_rows = k.sum(dim=1) - kd, l_.sum(dim=1) - ld
    if not debiased:
        return float(trace) / (n - 1) ** 2
    trace = trace - (kd * ld).sum()  # tr(K~ L~), diagonals removed
    value = (trace + k_rows.sum() * l_rows.sum() / ((n - 1) * (n - 2))
             - 2 / (n - 2) * (k_rows @ l_rows))
    return float(value) / (n * (n - 3))


def hsic_matrix(features: Sequence[Tensor], *, debiased: bool = True) -> Tensor:
    """``[L, L]`` HSIC between every pair of ``L`` feature matrices ``[n, p_i]`` of one
    minibatch, from one ``n x n`` Gram matrix per layer (float64)."""
    grams = []
    for x in features:
        x = _flat(x)
        grams.append(x @ x.T)
    gram = torch.stack(grams)  # [L, n, n]
    n = gram.shape[1]
    if not debiased:
        flat = gram.flatten(1)
        return flat @ flat.T / (n - 1) ** 2
    gram = gram * (1 - torch.eye(n, dtype=gram.dtype, device=gram.device))  # zero diagonals
    flat, rows = gram.flatten(1), gram.sum(dim=2)
    totals = rows.sum(dim=1)
    value = (flat @ flat.T + totals[:, None] * totals[None, :] / ((n - 1) * (n - 2))
             - 2 / (n - 2) * (rows @ rows.T))
    return value / (n * (n - 3))


def cka_from_hsic(matrix: Tensor) -> Tensor:
    """CKA from an ``[L, L]`` HSIC matrix: ``HSIC(i, j) / sqrt(HSIC(i, i) HSIC(j, j))``; NaN
    where a layer's self-HSIC is not positive (it does not vary), 1 on the others' diagonal."""
    self_ = matrix.diagonal().clone()
    valid = self_ > 0
    scale = self_.clamp_min(1e-300).sqrt()
    cka = matrix / (scale[:, None] * scale[None, :])
    cka[~valid[:, None] | ~valid[None, :]] = math.nan
    diagonal = cka.diagonal()
    diagonal.copy_(torch.where(valid, 1.0, math.nan))
    return cka


class CKAAccumulator:
    """Running HSIC sums of every pair of ``L`` layers, one minibatch at a time.

    Each :meth:`update` adds one minibatch's HSIC matrix, weighted by its size, for both
    estimators; with ``generator``, every layer's samples are first permuted independently
    (the sample-permuted null: the same features, paired with the wrong inputs).
    :meth:`compute` returns the CKA matrix of the accumulated data.
    """

    def __init__(self) -> None:
        self.samples = 0
        self._sums: dict[bool, Tensor] = {}

    def update(self, features: Sequence[Tensor], *, generator: torch.Generator | None = None
               ) -> None:
        """Add one minibatch: ``features[i]`` is layer ``i``'s ``[n, ...]`` activations."""
        n = features[0].shape[0]
        if any(f.shape[0] != n for f in features):
            raise ValueError(f"every layer needs the same samples, got batch sizes "
                             f"{[f.shape[0] for f in features]}")
        if n < MIN_SAMPLES[True]:
            raise ValueError(f"CKA needs at least 4 inputs in every batch (the debiased "
                             f"estimator's minimum), got a batch of {n}")
        if generator is not None:
            features = [f[torch.randperm(n, generator=generator).to(f.device)]
                        for f in features]
        for debiased in (True, False):
            value = hsic_matrix(features, debiased=debiased).cpu() * n
            self._sums[debiased] = self._sums.get(debiased, 0) + value
        self.samples += n

    def compute(self, *, debiased: bool = True) -> Tensor:
        """``[L, L]`` CKA (float64) from the HSIC averaged over the minibatches so far."""
        if not self.samples:
            raise ValueError("no minibatch was added; call update() first")
        return cka_from_hsic(self._sums[debiased] / self.samples)
