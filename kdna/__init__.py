"""kdna: learn, inspect and use KernelDNA dynamic convolution (arXiv 2503.23379).

Children share a parent kernel through a tiny adapter (static per-filter and per-tap scales
plus an input-dependent channel gate) and still run as one ordinary convolution.
"""

from kdna.convert import convert, count_parameters
from kdna.fold import FoldedNorm, fold, unfold
from kdna.freeze import TrainableCount, adapter_only
from kdna.linear import ChildLinear
from kdna.models import create_model, list_models
from kdna.nn import ChannelGate, ChildConv2d, GateForm, KernelChild, ParentKernel
from kdna.report import ConversionReport

__version__ = "0.1.0"

__all__ = [
    "ChannelGate",
    "ChildConv2d",
    "ChildLinear",
    "ConversionReport",
    "FoldedNorm",
    "GateForm",
    "KernelChild",
    "ParentKernel",
    "TrainableCount",
    "__version__",
    "adapter_only",
    "convert",
    "count_parameters",
    "create_model",
    "fold",
    "list_models",
    "unfold",
]
