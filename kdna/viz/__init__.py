"""Figures and explorers: plotly figures (:mod:`kdna.viz.figures`, each returns a
``go.Figure``) and ipywidgets explorers (:mod:`kdna.viz.widgets`, imported on its own).

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
    routing_heatmap,
    routing_profile,
    similarity_heatmap,
)

__all__ = ["accuracy_vs_parameters", "attribution_overlay", "conversion_tradeoff", "fit_errors",
           "image_predictions", "kernel_family", "layer_scores", "routing_heatmap",
           "routing_profile", "similarity_heatmap"]
