"""Relaxed children: a low-rank residual for what a child's scales cannot express.

A child's static kernel ``P * (1 + f) * (1 + s)`` can only rescale its parent's filters and
taps. When the kernel it replaces is unrelated to the parent (as pretrained kernels of
different layers are), :func:`relax` gives the child a rank-``r`` residual
``U @ V``, reshaped to the kernel's shape and added to the static kernel:

    W = P * (1 + f) * (1 + s) + reshape(U @ V)

It is initialised by a truncated SVD of what the scales leave over (``target - static``), the
best rank-``r`` correction there is (Eckart-Young), as Relaxed Recursive Transformers do for
their shared layers. The residual is part of the *static* kernel, so :func:`kdna.fold` folds it
in: the deployed child is still one convolution. It costs ``r * (C_out + C_in / groups * kh
* kw)`` parameters against the kernel's ``C_out * C_in / groups * kh * kw``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdna._checks import positive_int

__all__ = ["LowRankResidual", "relax", "residual_size"]


def residual_size(shape: tuple[int, ...] | torch.Size, rank: int) -> int:
    """Parameters of a rank-``rank`` residual for a kernel of ``shape``."""
    return rank * (shape[0] + int(torch.Size(shape[1:]).numel()))


class LowRankResidual(nn.Module):
    """``reshape(u @ v)`` to a kernel's shape: ``u`` is ``[C_out, r]``, ``v`` is ``[r, rest]``.

    ``LowRankResidual(shape, rank)`` starts at zero (``u = 0``, ``v`` small and random, as
    LoRA starts), so adding it changes nothing until it trains; :meth:`fit` starts it at the
    best rank-``r`` approximation of a given tensor instead.
    """

    def __init__(self, shape: tuple[int, ...] | torch.Size, rank: int, *,
                 device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        positive_int("rank", rank)
        self.shape = tuple(shape)
        rows, cols = self.shape[0], int(torch.Size(self.shape[1:]).numel())
        if rank > min(rows, cols):
            raise ValueError(f"rank must be at most min(C_out, C_in * kh * kw) = "
                             f"{min(rows, cols)} for a kernel of shape {list(shape)}, got {rank}")
        self.u = nn.Parameter(torch.zeros(rows, rank, device=device, dtype=dtype))
        self.v = nn.Parameter(torch.randn(rank, cols, device=device, dtype=dtype) / cols ** 0.5)

    @property
    def rank(self) -> int:
        return self.u.shape[1]

    @torch.no_grad()
    def fit(self, delta: Tensor) -> float:
        """Set ``u @ v`` to the best rank-``r`` approximation of ``delta`` (shape
        :attr:`shape`); returns the relative error ``||delta - u v|| / ||delta||``."""
        if tuple(delta.shape) != self.shape:
            raise ValueError(f"delta must have the kernel's shape {list(self.shape)}, "
                             f"got {list(delta.shape)}")
        matrix = delta.detach().reshape(self.shape[0], -1).double()
        left, singular, right = torch.linalg.svd(matrix, full_matrices=False)
        root = singular[:self.rank].sqrt()
        self.u.copy_(left[:, :self.rank] * root)
        self.v.copy_(root[:, None] * right[:self.rank])
        rest = singular[self.rank:].square().sum()
        total = singular.square().sum().clamp_min(1e-24)
        return (rest / total).sqrt().item()

    def forward(self) -> Tensor:
        return (self.u @ self.v).view(self.shape)

    def conv2d(self, x: Tensor, stride: tuple[int, int], padding: tuple[int, int] | str,
               dilation: tuple[int, int], groups: int) -> Tensor:
        """``conv2d(x, self())`` without building the kernel where that is cheaper: with
        ``groups == 1``, two small convolutions, LoRA's way (``v`` as ``r`` filters of the
        kernel's size, then ``u`` as a 1x1 convolution). Grouped kernels are built (they are
        as small as the grouped kernel)."""
        if groups != 1:
            return F.conv2d(x, self(), None, stride, padding, dilation, groups)
        hidden = F.conv2d(x, self.v.view(self.rank, *self.shape[1:]), None, stride, padding,
                          dilation)
        return F.conv2d(hidden, self.u.view(*self.u.shape, 1, 1))

    def linear(self, x: Tensor) -> Tensor:
        """``linear(x, self())`` as ``linear(linear(x, v), u)``, without the matrix."""
        return F.linear(F.linear(x, self.v), self.u)

    def extra_repr(self) -> str:
        return f"shape={list(self.shape)}, rank={self.rank}"


def relax(child: nn.Module, rank: int, target: Tensor | None = None) -> float:
    """Give ``child`` (a :class:`~kdna.nn.conv.KernelChild`) a rank-``rank`` residual.

    With ``target`` (the kernel the child should compute, e.g. the one it replaced), the
    residual starts at the truncated SVD of ``target - child.static_weight()`` and the return
    value is the relative error left, ``||target - W|| / ||target||``; without it the residual
    starts at zero and the return value is ``nan``. Replaces an existing residual.
    """
    if not hasattr(child, "static_weight") or not hasattr(child, "residual"):
        raise TypeError(f"child must be a KernelDNA child (ChildConv2d or ChildLinear), got "
                        f"{type(child).__name__}")
    weight = child.parent.weight
    child.residual = None
    residual = LowRankResidual(weight.shape, rank, device=weight.device, dtype=weight.dtype)
    error = float("nan")
    if target is not None:
        if tuple(target.shape) != tuple(weight.shape):
            raise ValueError(f"target must have the child's kernel shape {list(weight.shape)}, "
                             f"got {list(target.shape)}")
        with torch.no_grad():
            delta = target.detach().to(weight) - child.static_weight()
        left = residual.fit(delta)
        norm = torch.linalg.vector_norm(target.detach().double()).clamp_min(1e-24)
        error = left * torch.linalg.vector_norm(delta.double()).item() / norm.item()
    child.residual = residual
    return error
