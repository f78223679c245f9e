"""K expert kernels mixed per sample: the base of the dynamic-convolution baselines, and
CondConv and DY-Conv (ODConv, which also attends over taps and channels, is in
:mod:`kdna.nn.dynamic.odconv`).

* **CondConv** (Yang et al., 2019): ``r = sigmoid(fc(gap(x)))`` routes each sample over K
  expert kernels, ``W_b = sum_k r_bk W_k``. The K sigmoids are independent: the mixture is
  not normalised, so it can grow or shrink the kernel.
* **DY-Conv** (Chen et al., 2020): ``pi = softmax(fc2(relu(fc1(gap(x)))) / T)``, an SE-style
  attention over K kernels (and their biases) that sums to one; a large temperature ``T``
  (30, annealed towards 1 by setting ``.temperature``) keeps it near uniform early on.

Why each builds a per-sample kernel: mixing K kernels changes the kernel in a way no
rescaling of the activations reproduces, so sample ``b`` needs its own ``W_b``. They run in
the authors' fast form: the batch is folded into the channels and one grouped convolution
with ``groups * B`` groups runs every sample with its own kernel
(:func:`kdna.nn.functional.per_sample_conv2d`), building B kernels per call. KernelDNA's
dynamic part only scales input channels, which *is* a rescaling of the activations, so its
child stays one ordinary convolution of the normal batch with one kernel.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdna._checks import check_groups, check_padding, pair, positive_float, positive_int
from kdna.nn.functional import per_sample_conv2d

__all__ = ["CondConv2d", "DynamicConv2d", "ExpertConv2d"]


class ExpertConv2d(nn.Module):
    """What CondConv, DY-Conv and ODConv share: ``nn.Conv2d``'s geometry, K expert kernels,
    one convolution per sample.

    ``weight`` is ``[K, C_out, C_in / groups, kh, kw]``; ``bias`` (if any) is ``[K, C_out]``,
    one bias per expert, mixed with the same weights as the kernels.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] | str = 0,
                 dilation: int | tuple[int, int] = 1, groups: int = 1, bias: bool = False, *,
                 num_kernels: int, kernels_name: str, device: Any = None, dtype: Any = None
                 ) -> None:
        super().__init__()
        positive_int("in_channels", in_channels)
        positive_int("out_channels", out_channels)
        positive_int(kernels_name, num_kernels)
        check_groups(in_channels, out_channels, groups)
        for name, value in (("kernel_size", kernel_size), ("stride", stride),
                            ("dilation", dilation)):
            for item in pair(value):
                positive_int(name, item)
        check_padding(padding, stride)
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride = pair(kernel_size), pair(stride)
        self.padding = padding if isinstance(padding, str) else pair(padding)
        self.dilation = pair(dilation)
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(num_kernels, out_channels, in_channels // groups,
                                               *self.kernel_size, **factory))
        self.bias = (nn.Parameter(torch.empty(num_kernels, out_channels, **factory)) if bias
                     else None)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, **options: Any) -> ExpertConv2d:
        """A drop-in for ``conv``: its geometry, and its kernel (and bias) in every expert."""
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"from_conv expects an nn.Conv2d, got {type(conv).__name__}")
        if conv.padding_mode != "zeros":
            raise ValueError(f"{cls.__name__} supports padding_mode 'zeros' only, got "
                             f"{conv.padding_mode!r}")
        module = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                     conv.padding, conv.dilation, conv.groups, conv.bias is not None,
                     device=conv.weight.device, dtype=conv.weight.dtype, **options)
        with torch.no_grad():
            module.weight.copy_(conv.weight.expand_as(module.weight))
            if conv.bias is not None:
                module.bias.copy_(conv.bias.expand_as(module.bias))
        module._start_from_dense()
        return module.train(conv.training)

    def _start_from_dense(self) -> None:
        """Adjust the attention after :meth:`from_conv` copied the kernel (a hook)."""

    def reset_parameters(self) -> None:
        # Every expert initialised as nn.Conv2d initialises its kernel.
        fan_in = self.weight[0].numel() // self.out_channels
        for expert in self.weight:
            nn.init.kaiming_uniform_(expert, a=math.sqrt(5))
        if self.bias is not None:
            nn.init.uniform_(self.bias, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))

    def _pooled(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected a 4-D input [batch, {self.in_channels}, height, width], "
                             f"got shape {list(x.shape)}")
        return x.mean(dim=(2, 3))

    def _mix(self, weights: Tensor) -> tuple[Tensor, Tensor | None]:
        """Kernels ``[B, C_out, C_in / groups, kh, kw]``, biases ``[B, C_out]``: mixtures."""
        kernels = (weights @ self.weight.flatten(1)).view(-1, *self.weight.shape[1:])
        return kernels, None if self.bias is None else weights @ self.bias

    def _convolve(self, x: Tensor, kernels: Tensor, bias: Tensor | None) -> Tensor:
        """Convolve sample ``b`` with ``kernels[b]``; a single kernel serves the whole batch."""
        conv_args = (self.stride, self.padding, self.dilation, self.groups)
        channels_last = x.shape[1] > 1 and x.is_contiguous(memory_format=torch.channels_last)
        if kernels.shape[0] == 1:  # one kernel (or one sample): an ordinary convolution
            weight = kernels[0]
            if channels_last:  # an NCHW weight would make the convolution convert layouts
                weight = weight.contiguous(memory_format=torch.channels_last)
            out = F.conv2d(x, weight, None, *conv_args)  # a bias here is [1, C_out]
            return out if bias is None else out + bias[:, :, None, None]
        # Folding the batch into the channels needs NCHW; give the output the input's layout.
        out = per_sample_conv2d(x.contiguous(), kernels, bias, *conv_args)
        return out.contiguous(memory_format=torch.channels_last) if channels_last else out

    def extra_repr(self) -> str:
        parts = [f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}",
                 f"stride={self.stride}", f"padding={self.padding}"]
        if self.dilation != (1, 1):
            parts.append(f"dilation={self.dilation}")
        if self.groups != 1:
            parts.append(f"groups={self.groups}")
        parts.append(f"kernels={self.weight.shape[0]}, bias={self.bias is not None}")
        if hasattr(self, "temperature"):
            parts.append(f"temperature={self.temperature:g}")
        return ", ".join(parts)


class CondConv2d(ExpertConv2d):
    """CondConv: ``conv2d(x_b, sum_k r_bk W_k)`` with ``r = sigmoid(routing(gap(x)))``.

    Arguments mirror ``nn.Conv2d``; ``num_experts`` is K. ``from_conv`` copies the dense kernel
    into every expert and sets the routing bias to ``-log(K - 1)``, so each routing weight is
    ``1/K`` where the routing logits are zero; the routing weights keep their random values
    (identical experts under identical routing would stay identical forever), so the output
    starts as ``s_b * dense(x_b)`` with ``s_b = sum_k r_bk`` near 1, not exactly 1.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] | str = 0,
                 dilation: int | tuple[int, int] = 1, groups: int = 1, bias: bool = False, *,
                 num_experts: int = 8, device: Any = None, dtype: Any = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, num_kernels=num_experts, kernels_name="num_experts",
                         device=device, dtype=dtype)
        self.num_experts = num_experts
        self.routing = nn.Linear(in_channels, num_experts, device=device, dtype=dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        self.routing.reset_parameters()

    def _start_from_dense(self) -> None:
        if self.num_experts > 1:  # a single sigmoid weight cannot be exactly 1
            with torch.no_grad():
                self.routing.bias.fill_(-math.log(self.num_experts - 1))

    def routing_weights(self, x: Tensor) -> Tensor:
        """``[B, K]`` sigmoid routing weights for the input ``[B, C_in, H, W]``."""
        return torch.sigmoid(self.routing(self._pooled(x)))

    def forward(self, x: Tensor) -> Tensor:
        return self._convolve(x, *self._mix(self.routing_weights(x)))


class DynamicConv2d(ExpertConv2d):
    """DY-Conv: ``conv2d(x_b, sum_k pi_bk W_k) + sum_k pi_bk b_k``.

    ``pi = softmax(fc2(relu(fc1(gap(x)))) / temperature)``, ``fc1: C_in -> max(1, C_in //
    reduction)`` without bias. ``temperature`` can be set at any time (the paper anneals it
    from 30 to 1 over the first epochs). The attention sums to one, so after ``from_conv``
    (the dense kernel and bias in every expert) the output is exactly the dense conv's.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] | str = 0,
                 dilation: int | tuple[int, int] = 1, groups: int = 1, bias: bool = False, *,
                 num_kernels: int = 4, temperature: float = 30.0, reduction: int = 4,
                 device: Any = None, dtype: Any = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, num_kernels=num_kernels, kernels_name="num_kernels",
                         device=device, dtype=dtype)
        positive_int("reduction", reduction)
        self.num_kernels, self.reduction, self.temperature = num_kernels, reduction, temperature
        hidden = max(1, in_channels // reduction)
        self.fc1 = nn.Linear(in_channels, hidden, bias=False, device=device, dtype=dtype)
        self.fc2 = nn.Linear(hidden, num_kernels, device=device, dtype=dtype)
        self.reset_parameters()

    @property
    def temperature(self) -> float:
        return self._temperature

    @temperature.setter
    def temperature(self, value: float) -> None:
        self._temperature = positive_float("temperature", value)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        self.fc1.reset_parameters()
        self.fc2.reset_parameters()

    def attention(self, x: Tensor) -> Tensor:
        """``[B, K]`` softmax attention over the kernels for the input ``[B, C_in, H, W]``."""
        logits = self.fc2(F.relu(self.fc1(self._pooled(x))))
        return torch.softmax(logits / self.temperature, dim=1)

    def forward(self, x: Tensor) -> Tensor:
        return self._convolve(x, *self._mix(self.attention(x)))
