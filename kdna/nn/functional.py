"""Stateless KernelDNA maths: the child weight, and the per-sample view of the input gate.

These few functions are the whole method written as tensor algebra. The modules in
:mod:`kdna.nn` call them, and the tutorials use them to check that the modules compute
what the equations say.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["batchnorm_affine", "gated_kernels", "modulated_weight", "per_sample_conv2d"]


def modulated_weight(
    parent: Tensor, filter_scale: Tensor | None = None, spatial_scale: Tensor | None = None
) -> Tensor:
    """A child's static weight: ``parent * (1 + filter_scale) * (1 + spatial_scale)``.

    Args:
        parent: the shared kernel, ``[C_out, C_in / groups, kh, kw]``.
        filter_scale: one scale per output filter, ``[C_out, 1, 1, 1]`` (or ``None``).
        spatial_scale: one scale per spatial tap, ``[1, 1, kh, kw]`` (or ``None``).
    """
    weight = parent
    if filter_scale is not None:
        weight = weight * (1 + filter_scale)
    if spatial_scale is not None:
        weight = weight * (1 + spatial_scale)
    return weight


def gated_kernels(weight: Tensor, gate: Tensor, groups: int = 1) -> Tensor:
    """The per-sample kernels that gating the input channels is equivalent to.

    ``conv2d(x * gate[:, :, None, None], weight)`` equals, sample by sample,
    ``conv2d(x[b], gated_kernels(weight, gate)[b])``: scaling input channel ``c`` of a
    sample scales the kernel column that reads channel ``c``. KernelDNA never builds these
    kernels; this function exists to show (and test) that it does not need to.

    Args:
        weight: ``[C_out, C_in / groups, kh, kw]``.
        gate: ``[B, C_in]``, one gate vector per sample.
        groups: the convolution's groups.

    Returns:
        ``[B, C_out, C_in / groups, kh, kw]``.
    """
    c_out, c_in_per_group = weight.shape[:2]
    batch = gate.shape[0]
    # Input channel read by kernel column j of output filter o: group(o) * C_in/groups + j.
    group_of_filter = torch.arange(c_out, device=weight.device) // (c_out // groups)
    channel = group_of_filter[:, None] * c_in_per_group + torch.arange(
        c_in_per_group, device=weight.device
    )
    column_gate = gate[:, channel]  # [B, C_out, C_in / groups]
    return weight.unsqueeze(0) * column_gate.view(batch, c_out, c_in_per_group, 1, 1)


def per_sample_conv2d(
    x: Tensor,
    weights: Tensor,
    bias: Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] | str = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
) -> Tensor:
    """Convolve each sample with its own kernel, as one grouped convolution.

    This is how dynamic convolutions that build a kernel per sample (CondConv, DY-Conv,
    ODConv) must run: the batch is folded into the channels and ``groups`` is multiplied by
    the batch size. KernelDNA avoids it; it is here as a reference and for the baselines.

    Args:
        x: ``[B, C_in, H, W]``.
        weights: ``[B, C_out, C_in / groups, kh, kw]``.
        bias: ``[C_out]`` shared by all samples, or ``[B, C_out]``, or ``None``.
    """
    batch, c_in, height, width = x.shape
    c_out = weights.shape[1]
    out = F.conv2d(
        x.reshape(1, batch * c_in, height, width),
        weights.reshape(batch * c_out, *weights.shape[2:]),
        None,
        stride,
        padding,
        dilation,
        groups * batch,
    )
    out = out.view(batch, c_out, *out.shape[2:])
    if bias is not None:
        out = out + (bias if bias.dim() == 2 else bias.expand(batch, c_out))[:, :, None, None]
    return out


def batchnorm_affine(norm: torch.nn.modules.batchnorm._BatchNorm) -> tuple[Tensor, Tensor]:
    """``(scale, shift)`` with ``norm(x) == x * scale + shift`` in eval mode, per channel.

    What folding a BatchNorm into the layer before it multiplies and adds (the running
    statistics and, when the norm is affine, its weight and bias).
    """
    scale = torch.rsqrt(norm.running_var + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight
    shift = -norm.running_mean * scale
    if norm.bias is not None:
        shift = shift + norm.bias
    return scale, shift
