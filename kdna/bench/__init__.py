"""Speed, measured fairly: one harness for every model, the dynamic-convolution baselines,
and the comparison of one architecture built every way.

* :func:`measure`, :func:`compare`, :class:`Options` (:mod:`kdna.bench.harness`);
* :class:`CondConv2d`, :class:`DynamicConv2d`, :class:`ODConv2d` (:mod:`kdna.bench.baselines`);
* :func:`comparison_models`, :func:`run_comparison` (:mod:`kdna.bench.variants`).
"""

from kdna.bench.baselines import (
    BASELINES,
    CondConv2d,
    DynamicConv2d,
    ODConv2d,
    build_baseline,
    dynamic_network,
)
from kdna.bench.harness import (
    Measurement,
    Options,
    compare,
    count_macs,
    device_description,
    measure,
    peak_memory,
    ratios,
)
from kdna.bench.variants import (
    VARIANTS,
    comparison_models,
    markdown_table,
    run_comparison,
    write_csv,
)

__all__ = ["BASELINES", "VARIANTS", "CondConv2d", "DynamicConv2d", "Measurement", "ODConv2d",
           "Options", "build_baseline", "compare", "comparison_models", "count_macs",
           "device_description", "dynamic_network", "markdown_table", "measure", "peak_memory",
           "ratios", "run_comparison", "write_csv"]
