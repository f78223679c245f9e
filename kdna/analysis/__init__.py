"""Seeing inside a KernelDNA network: redundancy, routing, attributions.

* :mod:`kdna.analysis.similarity`: kernel cosine similarity and linear CKA between layers;
* :mod:`kdna.analysis.routing`: every child's gate per input, and per class;
* :mod:`kdna.analysis.attribution`: which pixels drive a prediction or a gate (captum,
  imported when first used: ``pip install 'kdna[analysis]'``);
* :mod:`kdna.analysis.hooks`: layers by name, and forward hooks that always come off.
"""

from kdna.analysis.routing import (
    Routing,
    RoutingStats,
    capture_routing,
    child_distance,
    most_changed_channels,
    routing_statistics,
)
from kdna.analysis.similarity import (
    MAX_FEATURES,
    Similarity,
    cka_matrix,
    kernel_similarity,
    layer_activations,
    linear_cka,
)

__all__ = ["MAX_FEATURES", "Routing", "RoutingStats", "Similarity", "capture_routing",
           "child_distance", "cka_matrix", "kernel_similarity", "layer_activations",
           "linear_cka", "most_changed_channels", "routing_statistics"]
