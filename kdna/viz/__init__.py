"""Figures and explorers: plotly figures (:mod:`kdna.viz.figures`, and one input's routing
through one child in :mod:`kdna.viz.gates`; each returns a ``go.Figure``) and ipywidgets
explorers (:mod:`kdna.viz.widgets`, imported on its own).

Needs the ``viz`` extra (plotly; the widgets also ipywidgets): ``pip install 'kdna[viz]'``.
"""

from kdna.viz.figures import (
    accuracy_vs_parameters,
    attribution_overlay,
    conversion_tradeoff,
    fit_errors,
    image_predictions,
    kernel_family,
    layer_scores,
    recovery_curve,
    routing_heatmap,
    routing_profile,
    similarity_heatmap,
)
from kdna.viz.gates import (
    changed_channels_html,
    effective_kernel_figure,
    gate_comparison_figure,
    gate_figure,
)

__all__ = ["accuracy_vs_parameters", "attribution_overlay", "changed_channels_html",
           "conversion_tradeoff", "effective_kernel_figure", "fit_errors", "gate_comparison_figure",
           "gate_figure", "image_predictions", "kernel_family", "layer_scores", "recovery_curve",
           "routing_heatmap", "routing_profile", "similarity_heatmap"]
