"""Speed, measured fairly: one harness for every model, networks built from the other dynamic
convolutions, and the comparison of one architecture built every way. This package measures
only; the layers it measures live in :mod:`kdna.nn` and :mod:`kdna.nn.dynamic`.

* :func:`measure`, :func:`compare`, :class:`Options` (:mod:`kdna.bench.harness`);
* :func:`dynamic_network`, :func:`build_baseline` (:mod:`kdna.bench.baselines`): CondConv,
  DY-Conv and ODConv networks;
* :func:`comparison_models`, :func:`run_comparison` (:mod:`kdna.bench.variants`).
"""

from kdna.bench.baselines import BASELINES, build_baseline, dynamic_network
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
    run_comparison,
    speed_table,
    write_csv,
)

__all__ = ["BASELINES", "VARIANTS", "Measurement", "Options", "build_baseline", "compare",
           "comparison_models", "count_macs", "device_description", "dynamic_network",
           "measure", "peak_memory", "ratios", "run_comparison", "speed_table", "write_csv"]
