"""The other dynamic convolutions, CondConv, DY-Conv and ODConv, as drop-ins for ``nn.Conv2d``.

They are here to be measured beside KernelDNA through one harness (:mod:`kdna.bench`):

* **CondConv** (Yang et al., 2019): ``r = sigmoid(fc(gap(x)))`` routes each sample over K
  expert kernels, ``W_b = sum_k r_bk W_k``. The K sigmoids are independent: the mixture is
  not normalised, so it can grow or shrink the kernel.
* **DY-Conv** (Chen et al., 2020): ``pi = softmax(fc2(relu(fc1(gap(x)))) / T)``, an SE-style
  attention over K kernels (and their biases) that sums to one; a large temperature ``T``
  (30, annealed towards 1 by setting ``.temperature``) keeps it near uniform early on.
* **ODConv** (Li et al., 2022): one squeeze (gap, fc, BN, ReLU) feeds four heads, attention
  over the k x k taps, the input channels, the output filters (sigmoids) and the K kernels
  (softmax): ``W_b = sum_k a_bk (a_spatial_b * a_in_b * W_k)``, output times ``a_filter_b``.

Why each builds a per-sample kernel: mixing K kernels, or reweighting a kernel's taps, changes
the kernel in a way no rescaling of the activations reproduces, so sample ``b`` needs its own
``W_b``. They run in the authors' fast form: the batch is folded into the channels and one
grouped convolution with ``groups * B`` groups runs every sample with its own kernel
(:func:`kdna.nn.functional.per_sample_conv2d`), building B kernels per call. KernelDNA's dynamic
part only scales input channels, which *is* a rescaling of the activations, so its child
stays one ordinary convolution of the normal batch with one kernel. (ODConv's input-channel
and filter attentions are of that kind too, so they are applied to the activations here, as
in the official code; only the kernel and spatial attentions enter ``W_b``.)

:func:`dynamic_network` swaps a model's convolutions for one of these; :data:`BASELINES`
names the usual variants and :func:`build_baseline` builds them on torchvision networks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from kdna._checks import check_groups, check_padding, pair, positive_float, positive_int
from kdna.conversion.convert import select_layers
from kdna.nn.functional import per_sample_conv2d
from kdna.nn.utils import replace_module

__all__ = ["ARCHS", "BASELINES", "CondConv2d", "DynamicConv2d", "ODAttention", "ODConv2d",
           "build_baseline", "dynamic_network"]


class _ExpertConv2d(nn.Module):
    """What the three share: ``nn.Conv2d``'s geometry, K expert kernels, per-sample conv.

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
    def from_conv(cls, conv: nn.Conv2d, **options: Any) -> _ExpertConv2d:
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


class CondConv2d(_ExpertConv2d):
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


class DynamicConv2d(_ExpertConv2d):
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


class ODAttention(NamedTuple):
    """ODConv's four attentions for a batch of B; a head that is skipped is ``None``."""

    channel: Tensor  # [B, C_in] input-channel attention (sigmoid)
    filter: Tensor | None  # [B, C_out] filter attention (sigmoid); None for depthwise convs
    spatial: Tensor | None  # [B, kh * kw] spatial attention (sigmoid); None for 1x1 kernels
    kernel: Tensor | None  # [B, K] kernel attention (softmax); None when K = 1


class ODConv2d(_ExpertConv2d):
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


# name: (module, options). The count after "x" is the number of kernels per layer.
BASELINES: dict[str, tuple[type[_ExpertConv2d], dict[str, Any]]] = {
    "condconv8x": (CondConv2d, {"num_experts": 8}),
    "dyconv4x": (DynamicConv2d, {"num_kernels": 4}),
    "odconv1x": (ODConv2d, {"kernel_num": 1}),
    "odconv4x": (ODConv2d, {"kernel_num": 4}),
}
ARCHS = ("resnet18", "resnet50", "mobilenet_v2")
# Variants whose published ResNets keep the 1x1 projection shortcuts dense (see build_baseline).
_DENSE_SHORTCUTS = ("condconv8x", "odconv1x", "odconv4x")


def _method(method: str | type[_ExpertConv2d]) -> tuple[type[_ExpertConv2d], dict[str, Any]]:
    if isinstance(method, type) and issubclass(method, _ExpertConv2d):
        return method, {}
    if method not in BASELINES:
        raise ValueError(f"unknown dynamic convolution {method!r}; expected one of "
                         f"{sorted(BASELINES)} or one of CondConv2d, DynamicConv2d, ODConv2d")
    return BASELINES[method]


def dynamic_network(model: nn.Module, method: str | type[_ExpertConv2d], *,
                    include: Sequence[str] | None = None, exclude: Sequence[str] | None = None,
                    stem: bool = False, **options: Any) -> nn.Module:
    """Replace ``model``'s convolutions by a dynamic convolution, in place; returns ``model``.

    Args:
        model: a CNN built from ``nn.Conv2d`` (exact type; subclasses are left alone).
        method: a :data:`BASELINES` name (``"dyconv4x"``, ...) or one of the classes.
        include, exclude: glob patterns over qualified module names (``"layer3.*"``), matched
            as :func:`kdna.convert` matches them; each pattern must match something.
        stem: also replace the stem (the first convolution in module order); by default the
            stem stays dense, as in all three papers.
        **options: constructor options of the method (``temperature=...``), overriding the
            :data:`BASELINES` defaults.

    Every replacement comes from ``from_conv``, so it copies the dense geometry and kernel.
    All replacements are built before the first one is swapped in: an error leaves the
    model unchanged.
    """
    cls, defaults = _method(method)
    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d | _ExpertConv2d)}
    stem_name = next(iter(convs), None)  # replaced or not, the stem stays the stem
    names = [n for n, m in convs.items() if type(m) is nn.Conv2d and (stem or n != stem_name)]
    chosen = select_layers(names, include, exclude)
    replacements = {name: cls.from_conv(convs[name], **{**defaults, **options})
                    for name in chosen}
    for name, module in replacements.items():
        replace_module(model, name, module)
    return model


def build_baseline(arch: str, method: str, *, num_classes: int = 1000, **kw: Any) -> nn.Module:
    """A randomly initialised torchvision ``arch`` (:data:`ARCHS`) with ``method``'s convs.

    ``kw`` goes to :func:`dynamic_network`. Without ``include``/``exclude``, the published
    ResNet layouts are followed: every conv but the stem, and for CondConv and ODConv not the
    1x1 projection shortcuts (``*.downsample.*``; the official ODConv ResNets keep them dense,
    and it brings CondConv's count closer to the published one). DY-Conv replaces them too.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {list(ARCHS)}")
    _method(method)
    model = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
    if (arch.startswith("resnet") and method in _DENSE_SHORTCUTS
            and kw.get("include") is None and kw.get("exclude") is None):
        kw["exclude"] = ["*.downsample.*"]
    return dynamic_network(model, method, **kw)
