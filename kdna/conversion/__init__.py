"""Bringing KernelDNA to a network you already have.

* :func:`convert` (:mod:`kdna.conversion.convert`): model surgery, in place;
* :class:`ConversionReport` (:mod:`kdna.conversion.report`): what it changed;
* :func:`adapter_only` (:mod:`kdna.conversion.freeze`): train only what KernelDNA added.
"""

from kdna.conversion.convert import convert, select_layers
from kdna.conversion.freeze import TrainableCount, adapter_only
from kdna.conversion.report import Agreement, ChildFit, ConversionReport, SharedGroup, agreement

__all__ = ["Agreement", "ChildFit", "ConversionReport", "SharedGroup", "TrainableCount",
           "adapter_only", "agreement", "convert", "select_layers"]
