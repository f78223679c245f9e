"""Train networks from scratch under one protocol: does KernelDNA train better?

The paper's headline is an accuracy-efficiency trade-off for networks trained from scratch.
This layer tests it with the fine-tuning comparison's machinery (splits, the learning rate
chosen per network from one grid on validation, test over seeds with the spread, runs cached
by a hash of their whole configuration):

* :mod:`kdna.scratch.networks`: the networks, in CIFAR-style form for small images, by name
  (:data:`NETWORKS`): plain ResNet-18, the paper's KernelDNA ResNet-18, a deep and a narrow
  plain control, CondConv-8x, DY-Conv-4x, ODConv-1x and -4x, the MobileNetV2 0.5x pair;
* :mod:`kdna.scratch.protocol`: :class:`ScratchProtocol`, what every run holds fixed, and
  :func:`committed_protocol` (the benchmark's, on a CPU or a GPU);
* :mod:`kdna.scratch.compare`: :func:`compare_networks` (train, choose, test), :func:`train_at`
  (given rates, one seed: a live rerun),
  :func:`measure_networks` (MACs and inference throughput, interleaved);
* :mod:`kdna.scratch.results`: the table, and :func:`claims`, the paper's claims judged:
  met, not met, or within one spread.
"""

from kdna.scratch.compare import (
    ScratchComparison,
    compare_networks,
    measure_networks,
    train_at,
    train_network,
)
from kdna.scratch.networks import NETWORKS, build_network, get_network, list_networks, narrow_width
from kdna.scratch.protocol import ScratchProtocol, committed_protocol, scratch_splits
from kdna.scratch.results import ScratchRow, Verdict, claims, markdown_table, read_rows

__all__ = ["NETWORKS", "ScratchComparison", "ScratchProtocol", "ScratchRow", "Verdict",
           "build_network", "claims", "committed_protocol", "compare_networks", "get_network",
           "list_networks", "markdown_table", "measure_networks", "narrow_width", "read_rows",
           "scratch_splits", "train_at", "train_network"]
