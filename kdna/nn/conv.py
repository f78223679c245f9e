"""The KernelDNA building blocks: a shared parent kernel and the children that borrow it.

A *child* convolution does not own a kernel. It borrows its *parent's* kernel ``P`` and
adapts it in two decoupled ways:

* **static modulation** (learned, the same for every input): ``W = P * (1 + f) * (1 + s)``
  with one scale ``f`` per output filter and one scale ``s`` per spatial tap; both start at
  zero, so a new child computes exactly what its parent would;
* **dynamic routing** (input-dependent): a squeeze-and-excitation gate ``g(x)`` over the
  child's *input channels* that multiplies the activations, not the weights.

Because the gate scales the input, the child is still one ordinary ``F.conv2d`` on the
normal batch: ``conv2d(x * g(x), W)``. No per-sample kernels are ever built. The gate itself
lives in :mod:`kdna.nn.gate`; the child of a pointwise ``nn.Linear`` in :mod:`kdna.nn.linear`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdna._checks import check_groups, check_padding, pair, positive_int
from kdna.nn.functional import batchnorm_affine, modulated_weight
from kdna.nn.gate import ChannelGate, GateForm
from kdna.nn.training import conv_padding, frozen_parent_conv2d

__all__ = ["ChildConv2d", "KernelChild", "ParentKernel", "parent_weight"]


class ParentKernel(nn.Module):
    """A convolution kernel that several :class:`ChildConv2d` share.

    The parent is one ``nn.Parameter`` of shape ``[out_channels, in_channels / groups, kh,
    kw]``. It has no forward pass of its own: its children run it, each with its own stride,
    padding and adapter, and each child's gradient flows into this one tensor.

    Args mirror ``nn.Conv2d``: ``ParentKernel(in_channels, out_channels, kernel_size,
    groups=1)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        groups: int = 1,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        positive_int("in_channels", in_channels)
        positive_int("out_channels", out_channels)
        check_groups(in_channels, out_channels, groups)
        kh, kw = pair(kernel_size)
        positive_int("kernel_size", kh)
        positive_int("kernel_size", kw)
        self.groups = groups
        self.weight = nn.Parameter(
            torch.empty(out_channels, in_channels // groups, kh, kw, device=device, dtype=dtype)
        )
        self.reset_parameters()

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> ParentKernel:
        """A parent initialised with a copy of ``conv``'s kernel (the conv is left as it is)."""
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"from_conv expects an nn.Conv2d, got {type(conv).__name__}")
        parent = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.groups,
                     device=conv.weight.device, dtype=conv.weight.dtype)
        with torch.no_grad():
            parent.weight.copy_(conv.weight)
        return parent

    def reset_parameters(self) -> None:
        # The same initialisation as nn.Conv2d, so a parent trained from scratch starts alike.
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    @property
    def in_channels(self) -> int:
        return self.weight.shape[1] * self.groups

    @property
    def out_channels(self) -> int:
        return self.weight.shape[0]

    @property
    def kernel_size(self) -> tuple[int, int]:
        return tuple(self.weight.shape[2:])

    def child(self, **kwargs) -> ChildConv2d:
        """A new child of this parent; keyword arguments as for :class:`ChildConv2d`."""
        return ChildConv2d(self, self.in_channels, self.out_channels, self.kernel_size,
                           groups=self.groups, **kwargs)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}"
                + (f", groups={self.groups}" if self.groups != 1 else ""))


def parent_weight(parent: nn.Module, dim: int, expected: str) -> nn.Parameter:
    """The ``dim``-D weight a child borrows from ``parent``; a ``TypeError`` naming
    ``expected`` when ``parent`` has none."""
    weight = getattr(parent, "weight", None)
    if not (isinstance(parent, nn.Module) and isinstance(weight, nn.Parameter)
            and weight.dim() == dim):
        raise TypeError(
            f"parent must be {expected} (a module with a {dim}-D weight parameter), "
            f"got {type(parent).__name__}"
        )
    return weight


class KernelChild(nn.Module):
    """What every child has: a borrowed parent kernel, its own adapter, a deployment cache.

    The adapter is ``filter_scale`` (one per output filter), ``spatial_scale`` (one per
    kernel tap, or ``None``), an optional own ``bias``, an optional input ``gate`` and an
    optional low-rank ``residual`` (a *relaxed* child, :func:`kdna.nn.relax`).
    Subclasses (:class:`ChildConv2d`, :class:`kdna.nn.linear.ChildLinear`) call
    :meth:`_init_adapter` and implement ``forward`` and ``fold``.
    """

    parent: nn.Module
    filter_scale: nn.Parameter
    spatial_scale: nn.Parameter | None
    bias: nn.Parameter | None
    gate: ChannelGate | None
    residual: nn.Module | None  # a kdna.nn.residual.LowRankResidual, given by kdna.nn.relax
    # Train with the frozen-parent form (kdna.nn.training) where it applies; False (on the
    # class or on one child) builds and differentiates the whole kernel: for comparing the
    # two, and for a network that changes a child's output in place.
    fast_training: bool = True

    def _init_adapter(self, parent: nn.Module, weight: Tensor, *, in_channels: int,
                      spatial: tuple[int, int] | None, bias: bool,
                      gate_reduction: int | None, gate_form: GateForm) -> None:
        if gate_reduction is not None:
            positive_int("gate_reduction", gate_reduction)
        factory = {"device": weight.device, "dtype": weight.dtype}
        out_channels = weight.shape[0]
        self.parent = parent
        self.filter_scale = nn.Parameter(
            torch.zeros(out_channels, *[1] * (weight.dim() - 1), **factory))
        self.spatial_scale = (
            nn.Parameter(torch.zeros(1, 1, *spatial, **factory)) if spatial else None
        )
        self.bias = nn.Parameter(torch.zeros(out_channels, **factory)) if bias else None
        self.gate = (
            None if gate_reduction is None
            else ChannelGate(in_channels, gate_reduction, form=gate_form).to(**factory)
        )
        self.residual = None
        # Deployment form, filled by fold(): the static weight (and bias, with any BatchNorm
        # folded in) computed once. Non-persistent, so state_dict is the same folded or not.
        self.register_buffer("folded_weight", None, persistent=False)
        self.register_buffer("folded_bias", None, persistent=False)

    @property
    def is_folded(self) -> bool:
        return self.folded_weight is not None

    def static_weight(self) -> Tensor:
        """The child's input-independent kernel ``parent * (1 + f) * (1 + s)``, plus its
        low-rank residual if it has one (:func:`kdna.nn.relax`)."""
        weight = modulated_weight(self.parent.weight, self.filter_scale, self.spatial_scale)
        return weight if self.residual is None else weight + self.residual()

    def adapter_parameters(self) -> Iterator[nn.Parameter]:
        """What this child adds to its parent: the static scales, the residual, the gate."""
        yield self.filter_scale
        if self.spatial_scale is not None:
            yield self.spatial_scale
        if self.residual is not None:
            yield from self.residual.parameters()
        if self.gate is not None:
            yield from self.gate.parameters()

    def _frozen_parent_training(self) -> bool:
        """Whether this step trains the adapter against a frozen, unfolded kernel: the case
        :mod:`kdna.nn.training` computes without the kernel's gradient."""
        return (self.fast_training and self.training and torch.is_grad_enabled()
                and not self.parent.weight.requires_grad and not self.is_folded)

    def _deployed(self) -> tuple[Tensor, Tensor | None]:
        """The weight and bias to run with: the folded cache, or computed afresh."""
        if not self.is_folded:
            return self.static_weight(), self.bias
        if self.training:
            raise RuntimeError(
                "this child is folded for inference; call kdna.unfold(model) before training"
            )
        return self.folded_weight, self.folded_bias

    def _cache(self, weight: Tensor, bias: Tensor | None) -> None:
        self.folded_weight = weight.detach().clone()
        self.folded_bias = None if bias is None else bias.detach().clone()
        if self.gate is not None:
            self.gate.fold()

    def unfold(self) -> None:
        """Drop the cached deployment weight; the trainable form was never touched."""
        self.folded_weight = None
        self.folded_bias = None
        if self.gate is not None:
            self.gate.unfold()


class ChildConv2d(KernelChild):
    """A convolution that borrows its parent's kernel through a tiny adapter.

    ``forward(x) = conv2d(x * gate(x), parent * (1 + filter_scale) * (1 + spatial_scale))``

    Arguments mirror ``nn.Conv2d`` after ``parent``; ``in_channels``, ``out_channels``,
    ``kernel_size`` and ``groups`` must agree with the parent's kernel (use
    :meth:`ParentKernel.child` to have them filled in). ``bias`` defaults to ``False``
    because children are followed by a BatchNorm.

    Args:
        parent: a :class:`ParentKernel`, or an ``nn.Conv2d`` whose kernel the child shares
            (the paper's layouts use a dense convolution as the parent of the children
            around it). Only the kernel is shared, not a parent convolution's bias. The parent
            becomes a submodule of the child, so ``.to()``, ``deepcopy`` and ``state_dict``
            keep it shared; ``parameters()`` counts it once.
        gate_reduction: the gate's reduction ratio ``r`` (its hidden layer has
            ``max(1, in_channels // r)`` units), or ``None`` for no dynamic gate.
        gate_form: ``"paper"`` (sigmoid) or ``"identity"`` (exactly 1 at initialisation).
        spatial: learn a per-tap spatial scale; by default only for kernels larger than 1x1
            (for a 1x1 kernel it would duplicate the filter scale).
    """

    def __init__(
        self,
        parent: ParentKernel | nn.Conv2d,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = False,
        *,
        gate_reduction: int | None = 4,
        gate_form: GateForm = "paper",
        spatial: bool | None = None,
    ) -> None:
        super().__init__()
        weight = parent_weight(parent, 4, "a ParentKernel or an nn.Conv2d")
        check_groups(in_channels, out_channels, groups)
        kernel_size = pair(kernel_size)
        check_padding(padding, stride)
        expected = (out_channels, in_channels // groups, *kernel_size)
        if tuple(weight.shape) != expected:
            raise ValueError(
                f"child kernel shape {list(expected)} (out_channels, in_channels / groups, kh, kw)"
                f" does not match its parent's kernel shape {list(weight.shape)}"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.groups = kernel_size, groups
        self.stride, self.dilation = pair(stride), pair(dilation)
        self.padding = padding if isinstance(padding, str) else pair(padding)
        if spatial is None:
            spatial = kernel_size != (1, 1)
        self._init_adapter(parent, weight, in_channels=in_channels,
                           spatial=kernel_size if spatial else None, bias=bias,
                           gate_reduction=gate_reduction, gate_form=gate_form)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected a 4-D input [batch, {self.in_channels}, height, width], "
                f"got shape {list(x.shape)}"
            )
        if self._frozen_parent_training():
            padding = conv_padding(self.padding, self.kernel_size, self.dilation)
            if padding is not None:
                return self._train_frozen_parent(x, padding)
        weight, bias = self._deployed()
        if self.gate is not None:
            gate = self.gate(x)
            if x.shape[0] == 1 and self.groups == 1 and weight.numel() < x.numel():
                # One image: scaling its input channels equals scaling the kernel's input
                # columns, and the kernel is the smaller tensor to scale (early, large maps).
                weight = weight * gate[:, :, None, None]
            else:
                x = x * gate[:, :, None, None]
        if x.is_contiguous(memory_format=torch.channels_last) and x.shape[1] > 1:
            # The modulated weight is computed in the default (NCHW) layout; a channels-last
            # input with an NCHW weight would make the convolution convert layouts each call.
            weight = weight.contiguous(memory_format=torch.channels_last)
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def _train_frozen_parent(self, x: Tensor, padding: tuple[int, int]) -> Tensor:
        gate = None if self.gate is None else self.gate(x)
        geometry = (self.stride, padding, self.dilation, self.groups)
        if self.residual is None:
            return frozen_parent_conv2d(x, gate, self.parent.weight, self.filter_scale,
                                        self.spatial_scale, self.bias, *geometry)
        if gate is not None:
            x = x * gate[:, :, None, None]
        return (frozen_parent_conv2d(x, None, self.parent.weight, self.filter_scale,
                                     self.spatial_scale, self.bias, *geometry)
                + self.residual.conv2d(x, *geometry))

    @torch.no_grad()
    def fold(self, norm: nn.BatchNorm2d | None = None) -> None:
        """Cache the static weight, folding in ``norm`` (a BatchNorm that follows) if given."""
        weight, bias = self.static_weight(), self.bias
        if norm is not None:
            if norm.running_var is None or norm.num_features != self.out_channels:
                raise ValueError(
                    f"can only fold a BatchNorm2d with running statistics over "
                    f"{self.out_channels} channels, got {norm}"
                )
            scale, shift = batchnorm_affine(norm)
            weight = weight * scale[:, None, None, None]
            bias = shift if bias is None else bias * scale + shift
        self._cache(weight, bias)

    def extra_repr(self) -> str:
        parts = [f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}",
                 f"stride={self.stride}"]
        if self.padding not in ((0, 0), "valid"):
            parts.append(f"padding={self.padding}")
        if self.dilation != (1, 1):
            parts.append(f"dilation={self.dilation}")
        if self.groups != 1:
            parts.append(f"groups={self.groups}")
        parts.append(f"spatial={self.spatial_scale is not None}")
        if self.bias is not None:
            parts.append("bias=True")
        if self.is_folded:
            parts.append("folded")
        return ", ".join(parts)
