"""kdna: learn, inspect and use KernelDNA dynamic convolution (arXiv 2503.23379).

Children share a parent kernel through a tiny adapter (static per-filter and per-tap scales
plus an input-dependent channel gate) and still run as one ordinary convolution.

The method lives in :mod:`kdna.nn`; each job has its own subpackage, and imports only point
down this list: :mod:`kdna.conversion` (bringing KernelDNA to a network), :mod:`kdna.data`,
:mod:`kdna.models`, :mod:`kdna.train`, :mod:`kdna.finetune` (fine-tuning a pretrained network
on a data set; the module is callable: ``kdna.finetune(arch, data)``), :mod:`kdna.analysis`,
:mod:`kdna.viz`,
:mod:`kdna.deploy`, :mod:`kdna.bench`, :mod:`kdna.dense` and :mod:`kdna.cli`.
"""

from kdna import finetune
from kdna.conversion import (
    ConversionReport,
    ConvertConfig,
    TrainableCount,
    adapter_only,
    apply_plan,
    convert,
    distill,
    load_adapters,
    plan_by_damage,
    save_adapters,
)
from kdna.data import load_data
from kdna.finetune import FinetuneResult, load_task
from kdna.models import PretrainedConfig, create_model, list_models, pretrained_config
from kdna.nn import (
    ChannelGate,
    ChildConv2d,
    ChildLinear,
    FoldedNorm,
    FrozenBatchNorm2d,
    GateForm,
    KernelChild,
    ParentKernel,
    count_parameters,
    fold,
    freeze_batchnorm,
    unfold,
)

__version__ = "0.1.0"

__all__ = [
    "ChannelGate",
    "ChildConv2d",
    "ChildLinear",
    "ConversionReport",
    "ConvertConfig",
    "FinetuneResult",
    "FoldedNorm",
    "FrozenBatchNorm2d",
    "GateForm",
    "KernelChild",
    "ParentKernel",
    "PretrainedConfig",
    "TrainableCount",
    "__version__",
    "adapter_only",
    "apply_plan",
    "convert",
    "count_parameters",
    "create_model",
    "distill",
    "finetune",
    "fold",
    "freeze_batchnorm",
    "list_models",
    "load_adapters",
    "load_data",
    "load_task",
    "plan_by_damage",
    "pretrained_config",
    "save_adapters",
    "unfold",
]
