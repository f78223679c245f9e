"""Plotly figure builders: each returns a ``go.Figure`` with a title and labelled axes.

None of them shows the figure; the caller (a notebook, a widget, a report) decides.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
import torch
from PIL import Image
from plotly.subplots import make_subplots
from torch import nn

from kdna.nn import ChildConv2d, ParentKernel
from kdna.report import ConversionReport

__all__ = ["accuracy_vs_parameters", "conversion_tradeoff", "fit_errors", "image_predictions",
           "kernel_family"]


def kernel_family(
    parent: ParentKernel | nn.Conv2d,
    children: Sequence[ChildConv2d] | Mapping[str, ChildConv2d],
    *,
    filters: Sequence[int] = (0, 1, 2),
    channel: int = 0,
    title: str = "A parent kernel and its children",
) -> go.Figure:
    """Heatmaps of a parent kernel beside its children's static kernels.

    One row per output filter in ``filters``, one column for the parent and one per child,
    all on one colour scale, each cell the ``kh x kw`` kernel that reads input ``channel``.
    A child's static weight is ``parent * (1 + f) * (1 + s)``, so a row shows the same
    pattern rescaled per filter (f) and reweighted per tap (s).
    """
    named = dict(children) if isinstance(children, Mapping) else {
        f"child {i}": child for i, child in enumerate(children, 1)}
    if not named:
        raise ValueError("kernel_family needs at least one child")
    kernels = {"parent": parent.weight}
    for name, child in named.items():
        if child.parent.weight is not parent.weight:
            raise ValueError(f"{name} is not a child of the given parent")
        kernels[name] = child.static_weight()
    n_filters, n_in = parent.weight.shape[:2]
    bad = [f for f in filters if not 0 <= f < n_filters]
    if bad or not 0 <= channel < n_in:
        raise ValueError(
            f"filters {list(filters)} must lie in [0, {n_filters}) and channel {channel} in "
            f"[0, {n_in})")
    with torch.no_grad():
        slices = {name: w[list(filters), channel].float().cpu() for name, w in kernels.items()}
    limit = max(s.abs().max().item() for s in slices.values()) or 1.0
    fig = make_subplots(rows=len(filters), cols=len(slices), column_titles=list(slices),
                        row_titles=[f"filter {f}" for f in filters],
                        horizontal_spacing=0.02, vertical_spacing=0.04)
    for col, (name, block) in enumerate(slices.items(), 1):
        for row, kernel in enumerate(block, 1):
            fig.add_trace(go.Heatmap(
                z=kernel.numpy(), coloraxis="coloraxis", name=f"{name}, filter {filters[row - 1]}",
                hovertemplate="row %{y}, column %{x}: %{z:.4f}<extra>%{fullData.name}</extra>"),
                row=row, col=col)
    fig.update_yaxes(autorange="reversed", showticklabels=False)
    fig.update_xaxes(showticklabels=False)
    fig.update_xaxes(title_text="kernel column", row=len(filters))
    fig.update_yaxes(title_text="kernel row", col=1)
    fig.update_layout(title=f"{title} (input channel {channel})",
                      coloraxis={"colorscale": "RdBu", "cmin": -limit, "cmax": limit,
                                 "colorbar": {"title": {"text": "weight"}}},
                      height=140 * len(filters) + 120, width=160 * len(slices) + 160)
    return fig


def fit_errors(report: ConversionReport, *, title: str = "How well each child's adapter "
               "reproduces the kernel it replaced") -> go.Figure:
    """Bar chart of each child's relative fit error after :func:`kdna.convert`, by parent.

    0 means the old kernel was an exact scaled copy of its parent; about 1 means the static
    scales could not express it at all (fine-tuning has to).
    """
    if not report.groups:
        raise ValueError("the report has no groups: nothing was converted")
    fig = go.Figure()
    for group in report.groups:
        fig.add_trace(go.Bar(
            x=[c.name for c in group.children], y=[c.fit_error for c in group.children],
            name=group.parent,
            hovertemplate="%{x}<br>fit error %{y:.3f}<extra>parent %{fullData.name}</extra>"))
    fig.update_layout(title=title, xaxis_title="child layer",
                      yaxis_title="relative fit error ||W - W_child|| / ||W||",
                      legend_title_text="parent", height=460)
    fig.update_yaxes(rangemode="tozero")
    return fig


def conversion_tradeoff(reports: Sequence[ConversionReport], *, labels: Sequence[str] | None = None,
                        title: str = "Sharing more saves more, and changes more"
                        ) -> go.Figure:
    """Parameters saved against output agreement, one point per conversion.

    Each report must carry an :class:`~kdna.report.Agreement` (``convert(...,
    example_inputs=batch)``). Top-1 agreement is drawn on the left axis, the relative logit
    error on the right.
    """
    if not reports or any(r.agreement is None for r in reports):
        raise ValueError("conversion_tradeoff needs reports made with example_inputs "
                         "(each with an agreement)")
    saved = [100 * r.saved_fraction for r in reports]
    text = list(labels) if labels is not None else [f"{len(r.groups)} groups" for r in reports]
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Scatter(x=saved, y=[100 * r.agreement.top1 for r in reports],
                             mode="lines+markers", name="top-1 agreement (%)", text=text,
                             hovertemplate="%{text}: %{y:.0f}%<extra></extra>"))
    fig.add_trace(go.Scatter(x=saved, y=[r.agreement.logit_error for r in reports],
                             mode="lines+markers", name="relative logit error", text=text,
                             line={"dash": "dot"},
                             hovertemplate="%{text}: %{y:.2f}<extra></extra>"),
                  secondary_y=True)
    fig.update_layout(title=title, xaxis_title="parameters saved (%)", height=420)
    fig.update_yaxes(title_text="top-1 agreement with the original (%)", range=[-5, 105],
                     secondary_y=False)
    fig.update_yaxes(title_text="relative logit error", rangemode="tozero", secondary_y=True)
    return fig


def _png_source(image: np.ndarray, size: int) -> str:
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"images must be HWC or HW uint8 arrays, got {image.dtype} with "
                         f"shape {image.shape}")
    picture = Image.fromarray(image).convert("RGB")
    picture.thumbnail((size, size))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def image_predictions(images: Sequence[np.ndarray], captions: Sequence[str], *,
                      title: str = "Predictions", cols: int = 4, size: int = 224) -> go.Figure:
    """Photos in a grid, each under its caption (the predicted class, say).

    ``images`` are HWC (or HW) uint8 arrays; each is embedded as a PNG of at most
    ``size`` pixels a side, so the figure stays small. Captions may contain ``<br>``.
    """
    if len(images) != len(captions) or not images:
        raise ValueError(f"need one caption per image, got {len(images)} images and "
                         f"{len(captions)} captions")
    rows = -(-len(images) // cols)
    fig = make_subplots(rows=rows, cols=min(cols, len(images)), subplot_titles=list(captions),
                        horizontal_spacing=0.02, vertical_spacing=0.12)
    for i, image in enumerate(images):
        fig.add_trace(go.Image(source=_png_source(image, size), name=captions[i]),
                      row=i // cols + 1, col=i % cols + 1)
    fig.update_xaxes(showticklabels=False, title_text="")
    fig.update_yaxes(showticklabels=False)
    fig.update_annotations(font_size=11)
    fig.update_layout(title=title, height=rows * (size + 90) + 60, margin={"t": 110})
    return fig


def accuracy_vs_parameters(results: Mapping[str, Mapping[str, float]], *,
                           title: str = "Accuracy against trainable parameters") -> go.Figure:
    """One marker per method: trainable parameters (log scale) against accuracy.

    ``results`` maps a method's name to a mapping with ``"trainable"`` (parameters) and
    ``"top1"`` (accuracy in %), and optionally ``"seconds_per_step"`` (shown on hover).
    """
    if not results:
        raise ValueError("accuracy_vs_parameters needs at least one result")
    fig = go.Figure()
    for name, row in results.items():
        missing = {"trainable", "top1"} - set(row)
        if missing:
            raise ValueError(f"result {name!r} lacks {sorted(missing)}")
        fig.add_trace(go.Scatter(
            x=[row["trainable"]], y=[row["top1"]], mode="markers+text", name=name,
            text=[name], textposition="top center", marker={"size": 14},
            customdata=[[row.get("seconds_per_step", float("nan"))]],
            hovertemplate="%{x:,} trainable<br>top-1 %{y:.1f}%<br>"
                          "%{customdata[0]:.3f} s per step<extra>%{fullData.name}</extra>"))
    fig.update_xaxes(type="log", title_text="trainable parameters (log scale)")
    fig.update_yaxes(title_text="validation top-1 (%)")
    fig.update_layout(title=title, height=440, showlegend=False)
    return fig
