"""kdna: learn, inspect and use KernelDNA dynamic convolution (arXiv 2503.23379).

Children share a parent kernel through a tiny adapter (static per-filter and per-tap scales
plus an input-dependent channel gate) and still run as one ordinary convolution.
"""

from kdna.fold import FoldedNorm, fold, unfold
from kdna.nn import ChannelGate, ChildConv2d, GateForm, ParentKernel

__version__ = "0.1.0"

__all__ = [
    "ChannelGate",
    "ChildConv2d",
    "FoldedNorm",
    "GateForm",
    "ParentKernel",
    "__version__",
    "fold",
    "unfold",
]
