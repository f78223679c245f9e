"""Bringing KernelDNA to a network you already have.

* :class:`ConvertConfig` (:mod:`kdna.conversion.config`): the conversion policy, with presets
  for pretrained weights, training from scratch and fixed layouts;
* :func:`convert` (:mod:`kdna.conversion.convert`): model surgery, in place; it is
  :func:`plan_conversion` (:mod:`kdna.conversion.plan`: which layers share which parent,
  changing nothing) then :func:`apply_plan` (building the children and fitting their scales);
* :class:`ConversionReport` (:mod:`kdna.conversion.report`): what it changed;
* :func:`adapter_only` (:mod:`kdna.conversion.freeze`): train only what KernelDNA added;
* :func:`save_adapters` / :func:`load_adapters` (:mod:`kdna.conversion.adapters`): adapter
  files, only what differs from the base network;
* :mod:`kdna.conversion.peft_method`: KernelDNA adapters as a peft method (needs the ``peft``
  extra; imported only when used).
"""

from kdna.conversion.adapters import load_adapters, save_adapters
from kdna.conversion.config import ConvertConfig
from kdna.conversion.convert import apply_plan, convert
from kdna.conversion.freeze import TrainableCount, adapter_only
from kdna.conversion.plan import ConversionPlan, plan_conversion, select_layers
from kdna.conversion.report import (
    Agreement,
    ChildFit,
    ConversionReport,
    LayerAdapter,
    SharedGroup,
    agreement,
)

__all__ = ["Agreement", "ChildFit", "ConversionPlan", "ConversionReport", "ConvertConfig",
           "LayerAdapter", "SharedGroup", "TrainableCount", "adapter_only", "agreement",
           "apply_plan", "convert", "load_adapters", "plan_conversion", "save_adapters",
           "select_layers"]
