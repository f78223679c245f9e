"""Seeing inside a KernelDNA network: redundancy, routing, attributions.

* :mod:`kdna.analysis.similarity`: kernel cosine similarity and linear CKA between layers;
* :mod:`kdna.analysis.cka`: the CKA estimators (debiased by default), over minibatches;
* :mod:`kdna.analysis.nulls`: the null beside each measure (random weights, random kernels,
  permutation tests, shuffled labels, fixed gates);
* :mod:`kdna.analysis.routing`: every child's gate per input, and per class;
* :mod:`kdna.analysis.attribution`: which pixels drive a prediction or a gate (captum,
  imported when first used: ``pip install 'kdna[analysis]'``);
* :mod:`kdna.analysis.hooks`: layers by name, and forward hooks that always come off.
"""

from kdna.analysis.cka import CKAAccumulator, hsic
from kdna.analysis.nulls import (
    PermutationTest,
    block_permutation_test,
    fixed_gates,
    label_permutation_test,
    random_kernel_similarity,
    random_weights,
)
from kdna.analysis.routing import (
    GATE_KINDS,
    Routing,
    RoutingStats,
    capture_routing,
    child_distance,
    gate_kinds,
    most_changed_channels,
    routing_statistics,
)
from kdna.analysis.similarity import (
    MAX_FEATURES,
    Similarity,
    cka_matrices,
    cka_matrix,
    kernel_cosine_matrix,
    kernel_similarity,
    layer_activations,
    linear_cka,
)

__all__ = ["GATE_KINDS", "MAX_FEATURES", "CKAAccumulator", "PermutationTest", "Routing",
           "RoutingStats", "Similarity", "block_permutation_test", "capture_routing",
           "child_distance", "cka_matrices", "cka_matrix", "fixed_gates", "gate_kinds", "hsic",
           "kernel_cosine_matrix", "kernel_similarity", "label_permutation_test",
           "layer_activations", "linear_cka", "most_changed_channels", "random_kernel_similarity",
           "random_weights", "routing_statistics"]
