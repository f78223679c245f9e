"""Fit a child's static scales so that its kernel best matches a given one.

Given a target kernel ``W`` and the parent ``P`` (same shape ``[C_out, C_in, kh, kw]``), find
a per-filter scale ``a`` and a per-tap scale ``b`` minimising

    || W - P * a[:, None, None, None] * b[None, None, :, :] ||^2.

For fixed ``b`` the problem is an independent one-dimensional least-squares problem per
filter, and for fixed ``a`` one per tap, each with a closed-form solution; alternating the
two never increases the error (alternating least squares). When ``W`` is exactly such a
scaled copy of ``P`` the first steps recover it. The child's parameters are then
``f = a - 1`` and ``s = b - 1``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["fit_scales"]

_EPS = 1e-12


@torch.no_grad()
def fit_scales(target: Tensor, parent: Tensor, *, spatial: bool = True, steps: int = 10
               ) -> tuple[Tensor, Tensor | None, float]:
    """Least-squares filter (and spatial) scales taking ``parent`` towards ``target``.

    Works for 4-D conv kernels and 2-D linear weights (no spatial scale then).

    Returns:
        ``(f, s, relative_error)``: ``f`` of shape ``[C_out]``, ``s`` of shape ``[kh, kw]`` (or
        ``None`` when ``spatial`` is false), and ``||W - fitted|| / ||W||``.
    """
    if target.shape != parent.shape:
        raise ValueError(f"target shape {list(target.shape)} and parent shape "
                         f"{list(parent.shape)} differ")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    spatial = spatial and parent.dim() == 4
    # Everything below needs only two [C_out, taps] summaries of the kernels, so each step
    # costs nothing next to the one pass that builds them.
    w, p = (x.detach().double().reshape(x.shape[0], x.shape[1], -1) for x in (target, parent))
    wp, pp = (w * p).sum(1), (p * p).sum(1)  # [C_out, taps]
    a = torch.ones(wp.shape[0], dtype=wp.dtype, device=wp.device)
    b = torch.ones(wp.shape[1], dtype=wp.dtype, device=wp.device)
    for _ in range(steps if spatial else 1):
        a = (wp @ b) / (pp @ (b * b)).clamp_min(_EPS)
        if spatial:
            b = (a @ wp) / ((a * a) @ pp).clamp_min(_EPS)
    if spatial:  # a * b is what matters; put the common factor into a, so that mean(b) = 1
        mean = b.mean()
        if mean.abs() > _EPS:
            a, b = a * mean, b / mean
    ab = a[:, None] * b[None, :]
    w_norm2 = (w * w).sum()
    residual2 = w_norm2 - 2 * (ab * wp).sum() + (ab * ab * pp).sum()
    error = (residual2.clamp_min(0) / w_norm2.clamp_min(_EPS)).sqrt().item()
    dtype = target.dtype
    s = (b - 1).view(parent.shape[2:]).to(dtype) if spatial else None
    return (a - 1).to(dtype), s, error
