"""BatchNorm with frozen statistics: the normalisation a fine-tuned pretrained network keeps.

A pretrained BatchNorm normalises with running statistics estimated on the data it was trained
on. Fine-tuning on a small data set in small batches should not re-estimate them: at the last
stages' 1x1 or 2x2 resolution a batch of 16 gives statistics that are mostly noise, and a
network whose statistics drift no longer computes the function it started from. A
:class:`FrozenBatchNorm2d` (or ``1d``) is an ``nn.BatchNorm2d`` that stays in eval mode whatever
``train()`` says:

``y = (x - running_mean) / sqrt(running_var + eps) * weight + bias``

Its running statistics never move, whatever its ``training`` flag says (its ``forward`` always
normalises with them, so even a flag set by hand changes nothing); its ``weight`` and ``bias``
stay parameters, so a method that trains the norms trains their scale and shift, which can
absorb any per-channel re-normalisation (set their ``requires_grad`` to ``False`` for a fixed
affine map, as torchvision's detectors use). Any batch size works, one included: the gates'
``BatchNorm1d`` sees one pooled vector per image, and a detector trains on one or two.

Being a subclass, it is still a BatchNorm to everything that folds, deploys or counts
BatchNorms, and its state dict is the BatchNorm's: a model saved frozen loads into the plain
network and computes the same function in eval mode.

:func:`freeze_batchnorm` swaps every BatchNorm of a model for its frozen form, in place,
keeping the very same parameter and buffer tensors.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdna._checks import module_arg

__all__ = ["BATCH_NORMS", "NORM_LAYERS", "FrozenBatchNorm1d", "FrozenBatchNorm2d",
           "freeze_batchnorm", "is_frozen_batchnorm"]

# The BatchNorm layers (torch's public classes; frozen ones included as subclasses): what keeps
# running statistics, and what a momentum setting applies to.
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
# The normalisation layers whose scale and shift "the norms" means (fine-tuning methods,
# adapter_only, weight decay).
NORM_LAYERS = (*BATCH_NORMS, nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm1d, nn.InstanceNorm2d,
               nn.InstanceNorm3d)


class _FrozenStatistics:
    """What makes a BatchNorm frozen: ``train()`` leaves it in eval mode, and ``forward``
    normalises with the running statistics whatever the mode flag says."""

    def train(self, mode: bool = True):
        return super().train(False)

    def forward(self, x: Tensor) -> Tensor:
        self._check_input_dim(x)
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            False, 0.0, self.eps)


class FrozenBatchNorm2d(_FrozenStatistics, nn.BatchNorm2d):
    """An ``nn.BatchNorm2d`` that always normalises with its running statistics (see the
    module docstring); ``train()`` leaves it in eval mode."""


class FrozenBatchNorm1d(_FrozenStatistics, nn.BatchNorm1d):
    """An ``nn.BatchNorm1d`` that always normalises with its running statistics (the gates'
    BatchNorm); ``train()`` leaves it in eval mode."""


_FROZEN = {nn.BatchNorm2d: FrozenBatchNorm2d, nn.BatchNorm1d: FrozenBatchNorm1d}


def is_frozen_batchnorm(module: nn.Module) -> bool:
    """Whether ``module`` is a BatchNorm whose statistics are frozen."""
    return isinstance(module, tuple(_FROZEN.values()))


def _frozen_copy(norm: nn.BatchNorm2d | nn.BatchNorm1d) -> nn.Module:
    """The frozen form of ``norm``, holding ``norm``'s own parameter and buffer tensors."""
    frozen = _FROZEN[type(norm)](norm.num_features, norm.eps, norm.momentum, norm.affine,
                                 device="meta")
    for name, param in norm.named_parameters(recurse=False):
        setattr(frozen, name, param)
    for name, buffer in norm.named_buffers(recurse=False):
        setattr(frozen, name, buffer)
    return frozen.train(False)


def freeze_batchnorm(model: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` and ``nn.BatchNorm1d`` of ``model`` (itself included)
    by its frozen form, in place, and return ``model`` (or its replacement when ``model`` is
    itself a BatchNorm). The frozen modules hold the very tensors the originals held, so
    ``requires_grad``, an optimizer's references and the state dict are unchanged. A
    BatchNorm without running statistics (``track_running_stats=False``) is refused: it has
    nothing to freeze."""
    module_arg("model", model)
    if type(model) in _FROZEN:
        return _frozen_copy(_checked(model, "model"))
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            if type(child) in _FROZEN:
                where = f"{parent_name}.{name}" if parent_name else name
                setattr(parent, name, _frozen_copy(_checked(child, where)))
    return model


def _checked(norm: nn.Module, where: str) -> nn.Module:
    if norm.running_mean is None or norm.running_var is None:
        raise ValueError(f"the BatchNorm {where!r} keeps no running statistics "
                         f"(track_running_stats=False), so there is nothing to freeze")
    return norm
