"""The normalisation of KernelDNA gates inside detectors and segmenters.

A gate's ``BatchNorm1d`` normalises one pooled descriptor per image. A detector trains on 1-4
images per step: batch statistics of two descriptors are nearly meaningless, and of one they
are undefined (``BatchNorm1d`` raises in train mode). :class:`FrozenGateNorm` therefore keeps
its statistics fixed and trains only its scale and shift, in train and eval mode alike, as
torchvision's ``FrozenBatchNorm2d`` does for feature maps (which freezes the scale and shift
too).
"""

from __future__ import annotations

import warnings

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FrozenGateNorm", "GateNorm"]


class FrozenGateNorm(nn.BatchNorm1d):
    """``BatchNorm1d`` with fixed statistics: an affine layer whose scale and shift train.

    ``y = (x - running_mean) / sqrt(running_var + eps) * weight + bias`` in train and eval
    mode; ``running_mean`` and ``running_var`` (and ``num_batches_tracked``) are never
    updated. They keep the values they were given: a gate built from scratch starts at mean
    0 and variance 1, so ``y = x / sqrt(1 + eps) * weight + bias``; statistics loaded from a
    state_dict stay as loaded. Any batch size works, one included. Same arguments and
    state_dict as ``BatchNorm1d``.
    """

    def forward(self, x: Tensor) -> Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            False, 0.0, self.eps)


class GateNorm(FrozenGateNorm):
    """Deprecated name of :class:`FrozenGateNorm` (it never updated its statistics); kept for
    one release, it warns when constructed. The gates of :mod:`kdna.dense` models are
    ``FrozenGateNorm`` modules, so ``isinstance(m, GateNorm)`` no longer finds them."""

    def __init__(self, *args, **kwargs) -> None:
        warnings.warn("kdna.dense.GateNorm is deprecated and will be removed in the next "
                      "release; it is kdna.dense.FrozenGateNorm (it normalises with fixed "
                      "statistics and trains only its scale and shift)", DeprecationWarning,
                      stacklevel=2)
        super().__init__(*args, **kwargs)
