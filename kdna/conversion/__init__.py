"""Bringing KernelDNA to a network you already have.

* :class:`ConvertConfig` (:mod:`kdna.conversion.config`): the conversion policy, with presets
  for pretrained weights, training from scratch and fixed layouts;
* :func:`convert` (:mod:`kdna.conversion.convert`): model surgery, in place; it is
  :func:`plan_conversion` (:mod:`kdna.conversion.rules`: the config read once, every layer's
  role and settings decided, nothing changed) then :func:`apply_plan` (the plan carried out,
  nothing decided);
* :class:`ConversionPlan` (:mod:`kdna.conversion.plan`): those decisions, layer by layer
  (:class:`LayerPlan`, :class:`GroupPlan`), printed as a table, recorded in adapter files;
* :mod:`kdna.conversion.layers`: the layers a conversion can touch and what a child costs;
* :class:`ConversionReport` (:mod:`kdna.conversion.report`): what it changed;
* :func:`adapter_only` (:mod:`kdna.conversion.trainable`): train only what KernelDNA added;
* sharing with recovery: new parents (:mod:`kdna.conversion.parents`, ``parent_init=``),
  :func:`plan_by_damage` (:mod:`kdna.conversion.budget`: a saving reached by sharing what
  hurts least) and :func:`distill` (:mod:`kdna.conversion.recovery`: training a shared network
  back towards its original on unlabeled images);
* :func:`save_adapters` / :func:`load_adapters` (:mod:`kdna.conversion.adapters`): adapter
  files, only what differs from the base network (the record a conversion leaves on the
  model: :mod:`kdna.conversion.record`);
* not a peft method: peft's ``register_peft_method`` accepts only names in its closed
  ``PeftType`` enum (``tests/test_adapters.py`` checks that this still holds).
"""

from kdna.conversion.adapters import load_adapters, save_adapters
from kdna.conversion.budget import DamagePlan, LayerDamage, plan_by_damage
from kdna.conversion.config import ConvertConfig
from kdna.conversion.convert import apply_plan, convert
from kdna.conversion.layers import select_layers
from kdna.conversion.plan import ConversionPlan, GroupPlan, LayerPlan
from kdna.conversion.recovery import DistillResult, distill, recovery_blocks
from kdna.conversion.report import (
    Agreement,
    ChildFit,
    ConversionReport,
    LayerAdapter,
    SharedGroup,
    agreement,
)
from kdna.conversion.rules import plan_conversion
from kdna.conversion.trainable import TrainableCount, adapter_only

__all__ = ["Agreement", "ChildFit", "ConversionPlan", "ConversionReport", "ConvertConfig",
           "DamagePlan", "DistillResult", "GroupPlan", "LayerAdapter", "LayerDamage",
           "LayerPlan", "SharedGroup", "TrainableCount", "adapter_only", "agreement",
           "apply_plan", "convert", "distill", "load_adapters", "plan_by_damage",
           "plan_conversion", "recovery_blocks", "save_adapters", "select_layers"]
