"""Figures and explorers: plotly figures (:mod:`kdna.viz.figures`; the mechanism itself, a
parent beside its children and the gate's pipeline, in :mod:`kdna.viz.mechanism`; one
input's routing through one child in :mod:`kdna.viz.gates`; a fine-tuning run's images,
curves, confusion matrix and mistakes in :mod:`kdna.viz.finetuning`; accuracy against a
cost, with the spread over seeds, in :mod:`kdna.viz.tradeoffs`; each returns a
``go.Figure``) and ipywidgets explorers (:mod:`kdna.viz.widgets`, imported on its own).

Needs the ``viz`` extra (plotly; the widgets also ipywidgets): ``pip install 'kdna[viz]'``.
"""

from kdna.viz.figures import (
    accuracy_vs_parameters,
    attribution_overlay,
    conversion_tradeoff,
    fit_errors,
    image_predictions,
    layer_scores,
    recovery_curve,
    routing_heatmap,
    routing_profile,
    similarity_heatmap,
)
from kdna.viz.finetuning import (
    confident_mistakes,
    confusion_heatmap,
    image_grid,
    mistakes_grid,
    pictures,
    training_curves,
)
from kdna.viz.gates import (
    changed_channels_html,
    effective_kernel_figure,
    gate_comparison_figure,
    gate_figure,
)
from kdna.viz.mechanism import gate_pipeline, kernel_family, parent_and_children
from kdna.viz.tradeoffs import accuracy_against

__all__ = ["accuracy_against", "accuracy_vs_parameters", "attribution_overlay",
           "changed_channels_html", "confident_mistakes", "confusion_heatmap",
           "conversion_tradeoff", "effective_kernel_figure", "fit_errors", "gate_comparison_figure",
           "gate_figure", "gate_pipeline", "image_grid", "image_predictions", "kernel_family",
           "layer_scores", "mistakes_grid", "parent_and_children", "pictures", "recovery_curve",
           "routing_heatmap", "routing_profile", "similarity_heatmap", "training_curves"]
