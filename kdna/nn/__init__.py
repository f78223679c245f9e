"""The method, ``torch.nn``-like: a shared parent kernel, its children, the input gate.

* :class:`ParentKernel`, :class:`ChildConv2d`, :class:`KernelChild` (:mod:`kdna.nn.conv`) and
  :class:`ChildLinear` (:mod:`kdna.nn.linear`): the parent and its children;
* :class:`ChannelGate` (:mod:`kdna.nn.gate`): the input-dependent routing;
* :mod:`kdna.nn.training`: how a child trains against a frozen parent (adapters in place)
  without the kernel's gradient;
* :mod:`kdna.nn.functional`: the same maths as plain tensor functions;
* :func:`fold` / :func:`unfold` (:mod:`kdna.nn.fold`): the deployment form and back;
* :func:`fit_scales` (:mod:`kdna.nn.fitting`): static scales that take a parent towards a kernel;
* :func:`relax` (:mod:`kdna.nn.residual`): a low-rank residual for what the scales cannot express;
* :class:`FrozenBatchNorm2d`, :func:`freeze_batchnorm` (:mod:`kdna.nn.norm`): BatchNorm with
  frozen statistics, what fine-tuning keeps;
* :mod:`kdna.nn.utils`: finding children, swapping modules, counting parameters.
"""

from kdna.nn import functional
from kdna.nn.conv import ChildConv2d, KernelChild, ParentKernel
from kdna.nn.fitting import fit_scales
from kdna.nn.fold import FoldedNorm, fold, following_norms, unfold
from kdna.nn.gate import ChannelGate, GateForm
from kdna.nn.linear import ChildLinear
from kdna.nn.norm import NORM_LAYERS, FrozenBatchNorm1d, FrozenBatchNorm2d, freeze_batchnorm
from kdna.nn.residual import LowRankResidual, relax, residual_size
from kdna.nn.utils import (
    children_of,
    count_parameters,
    default_device,
    device_description,
    device_of,
    eval_mode,
    head_name,
    replace_module,
)

__all__ = ["NORM_LAYERS", "ChannelGate", "ChildConv2d", "ChildLinear", "FoldedNorm",
           "FrozenBatchNorm1d", "FrozenBatchNorm2d", "GateForm", "KernelChild", "LowRankResidual",
           "ParentKernel", "children_of", "count_parameters", "default_device",
           "device_description", "device_of", "eval_mode", "fit_scales", "fold",
           "following_norms", "freeze_batchnorm", "functional", "head_name", "relax",
           "replace_module", "residual_size", "unfold"]
