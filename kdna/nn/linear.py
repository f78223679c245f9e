"""A child of a pointwise ``nn.Linear``: KernelDNA for channels-last blocks such as ConvNeXt's.

A ``Linear`` applied to every pixel of a channels-last tensor ``[B, H, W, C]`` *is* a 1x1
convolution, so it can share a parent exactly like one: ``W = P * (1 + f)`` with one scale
per output feature (a 1x1 kernel has no spatial taps), and the gate pools over every
position to scale the input features. It stays one ordinary ``F.linear``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdna._checks import positive_int
from kdna.nn.conv import KernelChild, parent_weight
from kdna.nn.gate import GateForm, spatial_mean
from kdna.nn.training import frozen_parent_linear

__all__ = ["ChildLinear"]


class ChildLinear(KernelChild):
    """``forward(x) = linear(x * gate(x), parent * (1 + filter_scale))`` on ``[B, ..., C]``.

    Args:
        parent: the ``nn.Linear`` whose weight the child shares (only the weight; the child
            has its own ``bias`` when ``bias=True``).
        in_features, out_features: must match the parent's weight.
        bias: give the child its own bias (``nn.Linear``'s default, ``True``).
        gate_reduction: the gate's reduction ratio, or ``None`` for no gate. The gate
            averages the input over every dimension between the batch and the features.
        gate_form: ``"paper"`` (sigmoid) or ``"identity"`` (exactly 1 at initialisation).
    """

    def __init__(
        self,
        parent: nn.Linear,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        gate_reduction: int | None = 4,
        gate_form: GateForm = "paper",
    ) -> None:
        super().__init__()
        weight = parent_weight(parent, 2, "an nn.Linear")
        positive_int("in_features", in_features)
        positive_int("out_features", out_features)
        if tuple(weight.shape) != (out_features, in_features):
            raise ValueError(
                f"child weight shape [{out_features}, {in_features}] (out_features, in_features)"
                f" does not match its parent's weight shape {list(weight.shape)}"
            )
        self.in_features, self.out_features = in_features, out_features
        self._init_adapter(parent, weight, in_channels=in_features, spatial=None, bias=bias,
                           gate_reduction=gate_reduction, gate_form=gate_form)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 2 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"expected an input [batch, ..., {self.in_features}], got shape {list(x.shape)}"
            )
        gate = None
        if self.gate is not None:
            pooled = spatial_mean(x.flatten(1, -2), (1,)) if x.dim() > 2 else x
            gate = self.gate(pooled)  # through forward, so hooks on the gate see it
        if self._frozen_parent_training():
            return self._train_frozen_parent(x, gate)
        if gate is not None:
            x = x * gate.view(gate.shape[0], *[1] * (x.dim() - 2), gate.shape[1])
        weight, bias = self._deployed()
        return F.linear(x, weight, bias)

    def _train_frozen_parent(self, x: Tensor, gate: Tensor | None) -> Tensor:
        if self.residual is None:
            return frozen_parent_linear(x, gate, self.parent.weight, self.filter_scale,
                                        self.bias)
        if gate is not None:
            x = x * gate.view(gate.shape[0], *[1] * (x.dim() - 2), gate.shape[1])
        return (frozen_parent_linear(x, None, self.parent.weight, self.filter_scale, self.bias)
                + self.residual.linear(x))

    def fold(self, norm: nn.Module | None = None) -> None:
        """Cache the static weight. Nothing follows a pointwise Linear to fold in."""
        if norm is not None:
            raise ValueError(f"ChildLinear has no following norm to fold, got {norm}")
        self._cache(self.static_weight(), self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}" + (", folded" if self.is_folded else ""))
