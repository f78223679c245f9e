"""ODConv (Li et al., 2022), omni-dimensional dynamic convolution, as a drop-in for
``nn.Conv2d``.

One squeeze (gap, fc, BN, ReLU) feeds four heads, attention over the k x k taps, the input
channels, the output filters (sigmoids) and the K kernels (softmax):
``W_b = sum_k a_bk (a_spatial_b * a_in_b * W_k)``, output times ``a_filter_b``. Reweighting a
kernel's taps, or mixing K kernels, needs a kernel per sample (see :mod:`kdna.nn.dynamic.experts`);
the input-channel and filter attentions are rescalings of the activations, so they are applied
to the activations here, as in the official code, and only the kernel and spatial attentions
enter ``W_b``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdna._checks import positive_float, positive_int
from kdna.nn.dynamic.experts import ExpertConv2d

__all__ = ["ODAttention", "ODConv2d"]


class ODAttention(NamedTuple):
    """ODConv's four attentions for a batch of B; a head that is skipped is ``None``."""

    channel: Tensor  # [B, C_in] input-channel attention (sigmoid)
    filter: Tensor | None  # [B, C_out] filter attention (sigmoid); None for depthwise convs
    spatial: Tensor | None  # [B, kh * kw] spatial attention (sigmoid); None for 1x1 kernels
    kernel: Tensor | None  # [B, K] kernel attention (softmax); None when K = 1


class ODConv2d(ExpertConv2d):
    """ODConv: ``conv2d(x_b * a_in_b, sum_k a_bk (a_spatial_b * W_k)) * a_filter_b + bias_b``.

    One squeeze ``h = relu(bn(fc(gap(x))))`` with ``max(int(C_in * reduction), min_channels)``
    units (the paper's size) feeds four heads, each a linear layer and ``sigmoid(z / T)``
    (``softmax(z / T)`` for the kernel head). Scaling the input channels is the same as
    scaling the kernel's input columns (``a_in * W_k``); it is applied to the activations, as
    in the official code. Heads that add nothing are skipped, as the official code does: the
    spatial one for 1x1 kernels, the kernel one when K = 1, and the filter one for depthwise
    convolutions (``groups == in == out``: each filter reads one channel, so the input
    attention already scales it). A 1x1 ODConv with one kernel thus needs no per-sample
    kernel at all. Biases, one per kernel, follow the kernel attention and are added last.

    ``from_conv`` copies the dense kernel into every expert, but the network does not start
    from the dense function: the sigmoid attentions are about 0.5 each at initialisation.
    A batch of one in training mode normalises with the BatchNorm's running statistics.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] | str = 0,
                 dilation: int | tuple[int, int] = 1, groups: int = 1, bias: bool = False, *,
                 kernel_num: int = 1, reduction: float = 0.0625, min_channels: int = 16,
                 temperature: float = 1.0, device: Any = None, dtype: Any = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, num_kernels=kernel_num, kernels_name="kernel_num",
                         device=device, dtype=dtype)
        positive_float("reduction", reduction)
        positive_int("min_channels", min_channels)
        self.kernel_num = kernel_num
        self.temperature = positive_float("temperature", temperature)
        hidden = max(int(in_channels * reduction), min_channels)
        factory = {"device": device, "dtype": dtype}
        self.fc = nn.Linear(in_channels, hidden, bias=False, **factory)
        self.bn = nn.BatchNorm1d(hidden, **factory)
        self.channel_fc = nn.Linear(hidden, in_channels, **factory)
        depthwise = groups == in_channels == out_channels
        taps = self.kernel_size[0] * self.kernel_size[1]
        self.filter_fc = None if depthwise else nn.Linear(hidden, out_channels, **factory)
        self.spatial_fc = None if taps == 1 else nn.Linear(hidden, taps, **factory)
        self.kernel_fc = None if kernel_num == 1 else nn.Linear(hidden, kernel_num, **factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        for layer in (self.fc, self.bn, self.channel_fc, self.filter_fc, self.spatial_fc,
                      self.kernel_fc):
            if layer is not None:
                layer.reset_parameters()

    def attentions(self, x: Tensor) -> ODAttention:
        """The four attentions for the input ``[B, C_in, H, W]``."""
        squeezed = self.fc(self._pooled(x))
        if self.training and squeezed.shape[0] == 1:  # no batch statistics from one sample
            bn = self.bn
            squeezed = F.batch_norm(squeezed, bn.running_mean, bn.running_var, bn.weight,
                                    bn.bias, False, 0.0, bn.eps)
        else:
            squeezed = self.bn(squeezed)
        h = F.relu(squeezed)

        def head(layer: nn.Linear | None, act=torch.sigmoid) -> Tensor | None:
            return None if layer is None else act(layer(h) / self.temperature)

        return ODAttention(head(self.channel_fc), head(self.filter_fc), head(self.spatial_fc),
                           head(self.kernel_fc, lambda z: torch.softmax(z, dim=1)))

    def forward(self, x: Tensor) -> Tensor:
        att = self.attentions(x)
        x = x * att.channel[:, :, None, None]
        if att.kernel is None:
            kernels = self.weight[:1]
            bias = None if self.bias is None else self.bias[:1]
        else:
            kernels, bias = self._mix(att.kernel)
        if att.spatial is not None:
            kernels = kernels * att.spatial.view(-1, 1, 1, *self.kernel_size)
        out = self._convolve(x, kernels, None)
        if att.filter is not None:
            out = out * att.filter[:, :, None, None]
        return out if bias is None else out + bias[:, :, None, None]
