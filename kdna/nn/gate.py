"""The input gate of a KernelDNA child: squeeze-and-excitation over its input channels."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdna._checks import one_of, positive_int
from kdna.nn.functional import batchnorm_affine

__all__ = ["ChannelGate", "GateForm", "spatial_mean"]

GateForm = Literal["paper", "identity"]
_GATE_FORMS = ("paper", "identity")


def spatial_mean(x: Tensor, dims: tuple[int, ...]) -> Tensor:
    """``x.mean(dims)``. While its gradient is recorded it is a sum divided by the count: the
    sum's backward broadcasts the gradient as a view, where the mean's divides a tensor as
    large as ``x`` (one more pass over every gated feature map per step)."""
    if not (torch.is_grad_enabled() and x.requires_grad):
        return x.mean(dim=dims)
    count = 1
    for d in dims:
        count *= x.shape[d]
    return x.sum(dim=dims) / count


class ChannelGate(nn.Module):
    """Squeeze-and-excitation gate over input channels: ``[B, C, H, W] -> [B, C]``.

    ``g(x) = act(fc2(relu(bn(fc1(mean_hw(x))))))`` with ``fc1: C -> C // reduction`` (no
    bias) and ``fc2: C // reduction -> C``.

    Two forms:

    * ``"paper"``: ``act = sigmoid``, default initialisation. The gate is about 0.5 at the
      start, which is fine when training from scratch.
    * ``"identity"``: ``act = 2 * sigmoid`` with ``fc2`` zero-initialised, so the gate is
      exactly 1 at initialisation and a converted pretrained network starts from the
      function it was given. Its range is (0, 2): it can boost a channel as well as damp it.
    """

    def __init__(self, channels: int, reduction: int = 4, *, form: GateForm = "paper") -> None:
        super().__init__()
        positive_int("channels", channels)
        positive_int("reduction", reduction)
        one_of("gate form", form, _GATE_FORMS)
        self.channels, self.reduction, self.form = channels, reduction, form
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden, bias=False)
        self.bn = nn.BatchNorm1d(hidden)
        self.fc2 = nn.Linear(hidden, channels)
        # Filled by fold(); non-persistent, so the state_dict is the same folded or not.
        self.register_buffer("folded_fc1_weight", None, persistent=False)
        self.register_buffer("folded_fc1_bias", None, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.fc1.reset_parameters()
        self.bn.reset_parameters()
        self.fc2.reset_parameters()
        if self.form == "identity":
            nn.init.zeros_(self.fc2.weight)
            nn.init.zeros_(self.fc2.bias)

    def forward(self, x: Tensor) -> Tensor:
        """The gate ``[B, C]`` for a feature map ``[B, C, H, W]`` or a pooled ``[B, C]``."""
        return self.excite(spatial_mean(x, (2, 3)) if x.dim() == 4 else x)

    def excite(self, pooled: Tensor) -> Tensor:
        """The gate from an already pooled descriptor ``[B, C]`` (the "squeeze" done)."""
        if self.folded_fc1_weight is None:
            hidden = self.bn(self.fc1(pooled))
        elif self.training:
            raise RuntimeError("this gate is folded for inference; call kdna.unfold(model) "
                               "before training")
        else:
            hidden = F.linear(pooled, self.folded_fc1_weight, self.folded_fc1_bias)
        gate = torch.sigmoid(self.fc2(F.relu(hidden)))
        return gate if self.form == "paper" else 2 * gate

    @torch.no_grad()
    def fold(self) -> None:
        """Deployment form: fold the BatchNorm's running statistics into ``fc1``.

        One small matmul with a bias replaces a matmul and a normalisation; the gate's
        output is unchanged in eval mode. :meth:`unfold` drops the cache.
        """
        scale, self.folded_fc1_bias = batchnorm_affine(self.bn)
        self.folded_fc1_weight = self.fc1.weight * scale[:, None]

    def unfold(self) -> None:
        self.folded_fc1_weight = self.folded_fc1_bias = None

    # The form travels in the state_dict: weights trained with one activation are only right
    # with that activation, so loading them also sets it.
    def get_extra_state(self) -> dict[str, str]:
        return {"form": self.form}

    def set_extra_state(self, state: dict[str, str]) -> None:
        if state.get("form") not in _GATE_FORMS:
            raise ValueError(f"gate form in the state_dict must be one of {_GATE_FORMS}, got "
                             f"{state.get('form')!r}")
        self.form = state["form"]

    def extra_repr(self) -> str:
        return f"{self.channels}, reduction={self.reduction}, form={self.form!r}"
