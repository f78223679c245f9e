"""The training form of a child whose parent kernel is frozen: adapters without kernel gradients.

A child computes ``conv2d(x * g, P * (1 + f) * (1 + s)) + b``. Written that way, autograd
reaches ``f`` and ``s`` through the whole kernel gradient ``dL/dW`` (a second convolution as
large as the one that computes ``dL/dx``) on every step, even when ``P`` is frozen, as it is
for adapters in place. Most of that work is avoidable:

* the filter scale multiplies output channels, ``conv(x, P (1 + f)) = conv(x, P) (1 + f)``, so
  ``dL/df_o`` is the sum over batch and positions of ``dL/dy * (y - b) / (1 + f)``: read off
  the output, which the next layer keeps for its own backward pass anyway;
* the gate multiplies input channels: ``dL/dg`` is the sum over positions of
  ``x * dL/d(x g)``, from the input gradient the convolution computes anyway;
* only the tap scale of a k x k kernel needs the kernel gradient,
  ``dL/ds_t = sum over filters and inputs of dL/dW * P * (1 + f)`` at tap ``t``. A depthwise
  kernel's is cheap; on a CPU it is computed as one depthwise convolution of the input with
  the output gradient where the backward kernel is slow (taps larger than 3x3, small maps).

:func:`frozen_parent_conv2d` and :func:`frozen_parent_linear` are those forms, as
``torch.autograd.Function`` s: the forward pass is the child's ordinary convolution (its
kernel built without being recorded, or the filter scale applied to the output where that is
the smaller tensor), the backward pass one convolution for ``dL/dx`` and each adapter's
gradient as above. They give the outputs and gradients of the plain form to float tolerance
(under autocast too); the frozen kernel gets no gradient.

Three things differ from the plain form. A filter switched off exactly (``f = -1``) cannot be
read off its output, so the kernel gradient is computed for that step (a data-dependent test,
which splits a ``torch.compile`` graph at each child). The output is kept for the backward
pass, so an operation that changes a child's output in place (a ``ReLU(inplace=True)``
straight after a child, with no norm between) makes autograd refuse the backward pass. And
the backward pass has no derivative of its own (``create_graph=True`` then fails).
``KernelChild.fast_training = False`` trains such a network the plain way.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["conv_padding", "frozen_parent_conv2d", "frozen_parent_linear"]


def conv_padding(padding: tuple[int, int] | str, kernel_size: tuple[int, int],
                 dilation: tuple[int, int]) -> tuple[int, int] | None:
    """``padding`` as two integers, or ``None`` where ``"same"`` pads unevenly."""
    if padding == "valid":
        return 0, 0
    if padding == "same":
        total = [d * (k - 1) for d, k in zip(dilation, kernel_size, strict=True)]
        return None if any(t % 2 for t in total) else (total[0] // 2, total[1] // 2)
    return padding


def _child_weight(parent: Tensor, scale: Tensor, spatial_scale: Tensor | None) -> Tensor:
    """``P * (1 + f) * (1 + s)`` from ``scale = 1 + f``, in one pass over the kernel (the two
    small scales multiplied first)."""
    return parent * (scale if spatial_scale is None else scale * (1 + spatial_scale))


def _output_numel(x: Tensor, parent: Tensor, geometry: tuple) -> int:
    """How many values ``conv2d(x, parent)`` with ``geometry`` outputs."""
    stride, padding, dilation, _ = geometry
    size = [(n + 2 * p - d * (k - 1) - 1) // s + 1 for n, p, d, k, s in zip(
        x.shape[2:], padding, dilation, parent.shape[2:], stride, strict=True)]
    return x.shape[0] * parent.shape[0] * size[0] * size[1]


def _channels_last(x: Tensor) -> bool:
    """Whether ``x`` is channels-last (and not also contiguous): the kernel must then be too,
    or the convolution converts it on every call."""
    return x.shape[1] > 1 and x.dim() == 4 and x.is_contiguous(
        memory_format=torch.channels_last) and not x.is_contiguous()


def _gated(x: Tensor, gate: Tensor | None, *, last: bool = False) -> Tensor:
    """``x`` with its channels (dimension 1, or the last one) scaled by ``gate`` ``[B, C]``."""
    if gate is None:
        return x
    ones = [1] * (x.dim() - 2)
    return x * gate.view(gate.shape[0], *ones, gate.shape[1]) if last else x * gate.view(
        *gate.shape, *ones)


def _any_zero(scale: Tensor) -> tuple[bool | None, Callable[[], bool]]:
    """Whether any of ``scale`` is exactly zero: the answer now where it costs no wait (on a
    CPU; else ``None``), and a callable for the backward pass. On a GPU the answer is copied
    back without waiting and read when the backward pass asks (long after it was ready), so
    no step waits for the GPU at each child."""
    flag = (scale == 0).any()
    if flag.device.type != "cuda":
        answer = bool(flag)
        return answer, lambda: answer
    event = torch.cuda.Event()
    flag = flag.to("cpu", non_blocking=True)
    event.record()

    def ready() -> bool:
        event.synchronize()
        return bool(flag)

    return None, ready


def _shaped_like(x: Tensor | None, meta: tuple, like: Tensor) -> Tensor:
    """``x``, or where it was not kept a stand-in of its shape: the input gradient of a
    convolution needs only the input's shape (as ``torch.nn.grad.conv2d_input`` does)."""
    return x if x is not None else like.new_empty(1).expand(meta[0])


def _gated_in_place(dxg: Tensor, gate: Tensor | None, dtype: torch.dtype, *,
                    last: bool = False) -> Tensor:
    """``dL/dx = g * dL/d(x g)`` in ``dtype``, scaling the freshly computed ``dL/d(x g)`` in
    place (one allocation of a feature map fewer) when its dtype already is ``dtype``."""
    if dxg.dtype != dtype:
        return _gated(dxg, gate, last=last).to(dtype)
    if gate is None:
        return dxg
    ones = [1] * (dxg.dim() - 2)
    shape = (gate.shape[0], *ones, gate.shape[1]) if last else (*gate.shape, *ones)
    return dxg.mul_(gate.view(shape).to(dtype))


def _depthwise_weight_grad(dy: Tensor, x: Tensor, kernel_size: tuple[int, int],
                           stride: tuple[int, int], padding: tuple[int, int],
                           dilation: tuple[int, int]) -> Tensor:
    """``dL/dW`` of a depthwise convolution, ``[C, 1, kh, kw]``, as one depthwise convolution:
    each (sample, channel) correlates its input with its output gradient (the kernel, dilated
    by the stride and strided by the dilation). On a CPU this is several times faster than the
    backward kernel for 5x5 and larger taps, and for small maps."""
    batch, channels = x.shape[:2]
    # Padding beyond the output gradient's extent only adds taps that see no input (their
    # gradient is zero) and sends the convolution down a slow path: pad less, place after.
    pads, places = [], []
    for p, s, d, n in zip(padding, stride, dilation, dy.shape[2:], strict=True):
        q = min(p, s * (n - 1))
        q = q if (p - q) % d == 0 else p
        pads.append(q)
        places.append((p - q) // d)
    out = F.conv2d(x.reshape(1, batch * channels, *x.shape[2:]),
                   dy.reshape(batch * channels, 1, *dy.shape[2:]), None,
                   dilation, pads, stride, batch * channels)
    (kh, kw), (top, left) = kernel_size, places
    out = F.pad(out, (left, kw - left - out.shape[3], top, kh - top - out.shape[2]))
    return out.view(batch, channels, kh, kw).sum(0).unsqueeze(1)


def _depthwise_trick_pays(weight: Tensor, dy: Tensor) -> bool:
    """Where the CPU's depthwise weight-gradient kernel is slow (measured on Lite0's and
    ConvNeXt's layers): kernels larger than 3x3, and maps smaller than 4x4."""
    return weight.shape[2] * weight.shape[3] > 9 or dy.shape[2] * dy.shape[3] < 16


def _filter_grad_from_output(dy: Tensor, y: Tensor, bias_grad: Tensor | None,
                             bias: Tensor | None, scale: Tensor, channel_dim: int) -> Tensor:
    """``sum(dy * (y - b)) / (1 + f)`` per output channel: ``dL/df`` read off the output."""
    dims = [d for d in range(dy.dim()) if d != channel_dim % dy.dim()]
    total = (dy * y).sum(dims, dtype=scale.dtype)
    if bias is not None:
        total = total - bias * bias_grad.to(scale.dtype)
    return total / scale


class _FrozenParentConv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, gate, parent, filter_scale, spatial_scale, bias, geometry):
        stride, padding, dilation, groups = geometry
        scale = 1 + filter_scale
        # Without a tap scale the filter scale goes on the output where that is smaller than
        # the kernel (late layers of a small input); otherwise into the kernel.
        on_output = (spatial_scale is None
                     and _output_numel(x, parent, geometry) < parent.numel())
        weight = parent if on_output else _child_weight(parent, scale, spatial_scale)
        if _channels_last(x):
            weight = weight.contiguous(memory_format=torch.channels_last)
        if gate is not None and x.shape[0] == 1 and groups == 1 and weight.numel() < x.numel():
            # One image: scaling its input channels equals scaling the kernel's input columns.
            x_in, weight = x, weight * gate.view(1, -1, 1, 1).to(weight.dtype)
        else:
            x_in = _gated(x, gate)
        y = F.conv2d(x_in, weight, None if on_output else bias, stride, padding, dilation,
                     groups)
        if on_output:
            y = y.mul_(scale.view(1, -1, 1, 1).to(y.dtype))
            y = y if bias is None else y.add_(bias.view(1, -1, 1, 1).to(y.dtype))
        needs = ctx.needs_input_grad
        # dL/df is read off the output (which the next layer keeps anyway) unless the kernel
        # gradient is computed for the tap scale.
        tap_grad = spatial_scale is not None and needs[4]
        ctx.from_output = needs[3] and not tap_grad
        switched_off, ctx.switched_off = _any_zero(scale) if ctx.from_output else (False, None)
        # The input is kept only for the gate's gradient and the kernel's.
        keep_x = needs[1] or tap_grad or switched_off is not False
        ctx.geometry, ctx.x_meta = geometry, (x.shape, x.dtype, _channels_last(x))
        # The kernel is rebuilt in backward rather than kept: it is as large as the parent.
        ctx.save_for_backward(x if keep_x else None, gate, parent, filter_scale, spatial_scale,
                              bias, y if ctx.from_output else None)
        return y

    @staticmethod
    @once_differentiable  # the backward pass is not itself recorded: no second derivatives
    def backward(ctx, dy):
        x, gate, parent, filter_scale, spatial_scale, bias, y = ctx.saved_tensors
        need_x, need_gate, _, need_f, need_s, need_bias, _ = ctx.needs_input_grad
        scale = 1 + filter_scale
        # A filter switched off exactly (f = -1) leaves nothing in its output to read dL/df
        # from: the kernel gradient gives it then.
        kernel_grad = need_s or (ctx.from_output and ctx.switched_off())
        xg = _shaped_like(x, ctx.x_meta, dy)
        if kernel_grad:
            xg = _gated(x, gate)
            xg = xg if xg.dtype == dy.dtype else xg.to(dy.dtype)
        dxg, dw = _conv_grads(dy, xg, parent, scale, spatial_scale, ctx.geometry,
                              need_x or need_gate, kernel_grad, ctx.x_meta[2])
        dbias = dy.sum((0, 2, 3)) if bias is not None and (need_bias or need_f) else None
        dgate = None if not need_gate else (dxg * x).sum((2, 3), dtype=gate.dtype)
        dx = None if not need_x else _gated_in_place(dxg, gate, ctx.x_meta[1])
        if kernel_grad:
            df, ds = _scale_grads(dw, parent, filter_scale, spatial_scale, need_f, need_s)
        else:
            ds = None
            df = None if not need_f else _filter_grad_from_output(
                dy, y, dbias, bias, scale.view(-1), 1).view_as(filter_scale)
        return dx, dgate, None, df, ds, dbias.to(bias.dtype) if need_bias else None, None


def _conv_grads(dy: Tensor, x: Tensor, parent: Tensor, scale: Tensor,
                spatial_scale: Tensor | None, geometry: tuple, need_input: bool,
                need_kernel: bool, channels_last: bool) -> tuple[Tensor | None, Tensor | None]:
    """``dL/d(input)`` and ``dL/dW`` of ``conv2d(x, P * (1 + f) * (1 + s))``. Without the
    kernel gradient and a tap scale, the filter scale goes on ``dy`` where that is smaller."""
    stride, padding, dilation, groups = geometry
    if not need_kernel and spatial_scale is None and dy.numel() < parent.numel():
        dy, weight = dy * scale.view(1, -1, 1, 1).to(dy.dtype), parent
    else:
        weight = _child_weight(parent, scale, spatial_scale)
    weight = weight if weight.dtype == dy.dtype else weight.to(dy.dtype)
    if channels_last:
        weight = weight.contiguous(memory_format=torch.channels_last)
    depthwise = (need_kernel and x.device.type == "cpu" and groups == x.shape[1] == len(weight)
                 and _depthwise_trick_pays(weight, dy))
    dx, dw, _ = torch.ops.aten.convolution_backward(
        dy, x, weight, None, stride, padding, dilation, False, (0, 0), groups,
        (need_input, need_kernel and not depthwise, False))
    if depthwise:
        dw = _depthwise_weight_grad(dy, x, weight.shape[2:], stride, padding, dilation)
    return dx, dw


def _scale_grads(dw: Tensor, parent: Tensor, filter_scale: Tensor,
                 spatial_scale: Tensor | None, need_f: bool, need_s: bool
                 ) -> tuple[Tensor | None, Tensor | None]:
    """``dL/df`` and ``dL/ds`` from the kernel gradient: ``R = dL/dW * P`` summed over the
    kernel's inputs (``[C_out, taps]``), then over the taps times ``1 + s`` or over the
    filters times ``1 + f``."""
    taps = parent.shape[2] * parent.shape[3]
    per_tap = (dw * parent).view(len(parent), -1, taps).sum(1, dtype=filter_scale.dtype)
    df = ds = None
    if need_f:
        df = per_tap.sum(1) if spatial_scale is None else per_tap @ (1 + spatial_scale.view(-1))
        df = df.view_as(filter_scale)
    if need_s:
        ds = ((1 + filter_scale.view(1, -1)) @ per_tap).view_as(spatial_scale)
    return df, ds


def frozen_parent_conv2d(x: Tensor, gate: Tensor | None, parent: Tensor, filter_scale: Tensor,
                         spatial_scale: Tensor | None, bias: Tensor | None,
                         stride: tuple[int, int], padding: tuple[int, int],
                         dilation: tuple[int, int], groups: int) -> Tensor:
    """``conv2d(x * gate, parent * (1 + filter_scale) * (1 + spatial_scale), bias)`` for a
    ``parent`` that gets no gradient, with the backward pass described in the module docstring.

    Args:
        x: ``[B, C_in, H, W]``.
        gate: ``[B, C_in]`` (the child's gate output), or ``None``.
        parent: ``[C_out, C_in / groups, kh, kw]``, frozen: it receives no gradient.
        filter_scale: ``[C_out, 1, 1, 1]``; spatial_scale: ``[1, 1, kh, kw]`` or ``None``.
        bias: ``[C_out]`` or ``None``.
        padding: two integers (:func:`conv_padding` turns a string into them).
    """
    return _FrozenParentConv2d.apply(x, gate, parent.detach(), filter_scale, spatial_scale, bias,
                                     (tuple(stride), tuple(padding), tuple(dilation), groups))


class _FrozenParentLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, gate, parent, filter_scale, bias):
        scale = 1 + filter_scale
        xg = _gated(x, gate, last=True)
        if x.numel() // x.shape[-1] < parent.shape[1]:  # the output is smaller: scale it
            y = F.linear(xg, parent).mul_(scale.view(-1).to(xg.dtype))
            y = y if bias is None else y.add_(bias.to(y.dtype))
        else:
            y = F.linear(xg, parent * scale, bias)
        need_f = ctx.needs_input_grad[3]
        switched_off, ctx.switched_off = _any_zero(scale) if need_f else (False, None)
        # The input is kept only for the gate's gradient and a switched-off filter's.
        keep_x = ctx.needs_input_grad[1] or switched_off is not False
        ctx.x_dtype = x.dtype
        ctx.save_for_backward(x if keep_x else None, gate, parent, filter_scale, bias,
                              y if need_f else None)
        return y

    @staticmethod
    @once_differentiable  # the backward pass is not itself recorded: no second derivatives
    def backward(ctx, dy):
        x, gate, parent, filter_scale, bias, y = ctx.saved_tensors
        need_x, need_gate, _, need_f, need_bias = ctx.needs_input_grad
        scale = 1 + filter_scale
        rows = dy.reshape(-1, dy.shape[-1])  # one matrix product, whatever dy's layout
        dbias = rows.sum(0) if bias is not None else None
        dx = dgate = df = None
        if need_x or need_gate:
            if rows.numel() < parent.numel():
                dxg = (rows * scale.view(1, -1).to(rows.dtype)).mm(parent.to(rows.dtype))
            else:
                dxg = rows.mm((parent * scale).to(rows.dtype))
            dxg = dxg.view(*dy.shape[:-1], parent.shape[1])
            if need_gate:
                dgate = _pooled(dxg * x).to(gate.dtype)
            if need_x:
                dx = _gated_in_place(dxg, gate, ctx.x_dtype, last=True)
        if need_f and ctx.switched_off():  # a filter switched off: dL/dW * P
            inputs = _gated(x, gate, last=True).reshape(-1, x.shape[-1]).to(rows.dtype)
            df = ((rows.t() @ inputs) * parent).sum(1, keepdim=True, dtype=filter_scale.dtype)
        elif need_f:
            df = _filter_grad_from_output(dy, y, dbias, bias, scale.view(-1), -1)
            df = df.view_as(filter_scale)
        return dx, dgate, None, df, dbias.to(bias.dtype) if need_bias else None


def _pooled(t: Tensor) -> Tensor:
    """Sum over every dimension between the batch and the features: ``[B, ..., C] -> [B, C]``."""
    return t.flatten(1, -2).sum(1, dtype=torch.float32) if t.dim() > 2 else t.float()


def frozen_parent_linear(x: Tensor, gate: Tensor | None, parent: Tensor, filter_scale: Tensor,
                         bias: Tensor | None) -> Tensor:
    """``linear(x * gate, parent * (1 + filter_scale), bias)`` on ``[B, ..., C_in]`` for a
    ``parent`` (``[C_out, C_in]``) that gets no gradient; ``gate`` is ``[B, C_in]`` or
    ``None``, ``filter_scale`` ``[C_out, 1]``."""
    return _FrozenParentLinear.apply(x, gate, parent.detach(), filter_scale, bias)

