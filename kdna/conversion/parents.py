"""Parent kernels for a group of layers: one member, the aligned mean, or a least-squares fit.

A shared group's parent can be one of its members, kept as it is (``parent_init="member"``,
the member chosen by ``parent_rule``), or a new kernel made from all of them, in which case
every member becomes a child:

* ``"mean"``: the members' mean after aligning each member's filters to the reference member
  (each filter scaled by the least-squares factor that takes it onto the reference's filter,
  so a filter with the opposite sign or another size does not cancel it out). This is the
  average initialisation that Relaxed Recursive Transformers use for shared layers.
* ``"lsq"``: the kernel that minimises the members' summed relative fit errors
  ``sum_m ||W_m - P * a_m * b_m||^2 / ||W_m||^2`` over the parent and every member's filter
  and tap scales, by alternating least squares from the aligned mean.
"""

from __future__ import annotations

import torch
from torch import Tensor

from kdna.nn.fitting import fit_scales

__all__ = ["PARENT_INITS", "aligned_mean", "least_squares_parent", "shared_parent"]

PARENT_INITS: tuple[str, ...] = ("member", "mean", "lsq")
_EPS = 1e-12


def _unit(weights: list[Tensor]) -> Tensor:
    """The members stacked as ``[m, C_out, C_in, taps]`` in float64, each of norm 1."""
    stacked = torch.stack([w.detach().double().reshape(w.shape[0], w.shape[1], -1)
                           for w in weights])
    norms = torch.linalg.vector_norm(stacked.flatten(1), dim=1).clamp_min(_EPS)
    return stacked / norms[:, None, None, None]


@torch.no_grad()
def aligned_mean(weights: list[Tensor], reference: int = 0) -> Tensor:
    """The mean of ``weights`` (one kernel shape) after scaling each filter of each member
    by the factor that best takes it onto filter ``o`` of ``weights[reference]``."""
    _check(weights)
    unit = _unit(weights)
    ref = unit[reference]
    dots = (unit * ref).sum(dim=(2, 3))  # [m, C_out]
    sizes = (unit * unit).sum(dim=(2, 3)).clamp_min(_EPS)
    aligned = unit * (dots / sizes)[:, :, None, None]
    mean = aligned.mean(dim=0)
    return _like(mean, weights[reference])


@torch.no_grad()
def least_squares_parent(weights: list[Tensor], *, spatial: bool = True, steps: int = 10,
                         reference: int = 0) -> Tensor:
    """The parent that best explains every member through its own filter and tap scales
    (alternating least squares from :func:`aligned_mean`; see the module docstring)."""
    _check(weights)
    unit = _unit(weights)
    parent = _unit([aligned_mean(weights, reference)])[0]
    for _ in range(steps):
        ab = []
        for member in unit:  # [C_out, C_in, taps, 1]: fit_scales sees the taps as a kernel
            f, s, _ = fit_scales(member[..., None], parent[..., None], spatial=spatial, steps=3)
            b = (s.reshape(-1) + 1) if s is not None else torch.ones(1, dtype=f.dtype)
            ab.append((f + 1)[:, None] * b[None, :])  # [C_out, taps]
        scale = torch.stack(ab)[:, :, None, :]  # [m, C_out, 1, taps]
        parent = (scale * unit).sum(0) / (scale * scale).sum(0).clamp_min(_EPS)
        parent = parent / torch.linalg.vector_norm(parent).clamp_min(_EPS)
    return _like(parent, weights[reference])


def shared_parent(weights: list[Tensor], init: str, *, spatial: bool, steps: int,
                  reference: int) -> Tensor:
    """The parent kernel ``init`` (``"mean"`` or ``"lsq"``) gives for ``weights``, scaled to
    the reference member's norm."""
    if init == "mean":
        parent = aligned_mean(weights, reference)
    elif init == "lsq":
        parent = least_squares_parent(weights, spatial=spatial, steps=steps, reference=reference)
    else:
        raise ValueError(f"parent_init must be 'mean' or 'lsq' for a new parent, got {init!r}")
    ref = weights[reference].detach()
    size = torch.linalg.vector_norm(ref.double()) / torch.linalg.vector_norm(
        parent.double()).clamp_min(_EPS)
    return (parent.double() * size).to(ref.dtype)


def _check(weights: list[Tensor]) -> None:
    shapes = {tuple(w.shape) for w in weights}
    if len(weights) < 2 or len(shapes) != 1:
        raise ValueError(f"a parent needs two or more kernels of one shape, got shapes "
                         f"{sorted(shapes)}")


def _like(kernel: Tensor, weight: Tensor) -> Tensor:
    """``kernel`` (``[C_out, C_in, taps]``) back in ``weight``'s shape, dtype and device."""
    return kernel.reshape(weight.shape).to(dtype=weight.dtype, device=weight.device)
