"""Plotly figure builders: each returns a ``go.Figure`` with a title and labelled axes.

None of them shows the figure; the caller (a notebook, a widget, a report) decides.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from kdna._checks import positive_int
from kdna._extras import require
from kdna.conversion.report import ConversionReport

go = require("plotly.graph_objects", "viz", "kdna.viz")  # ImportError naming kdna[viz]
make_subplots = require("plotly.subplots", "viz", "kdna.viz").make_subplots

__all__ = ["accuracy_vs_parameters", "attribution_overlay", "conversion_tradeoff", "fit_errors",
           "image_predictions", "layer_scores", "routing_heatmap",
           "routing_profile", "similarity_heatmap"]


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

    Each report must carry an :class:`~kdna.conversion.report.Agreement` (``convert(...,
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


def recovery_curve(rows: Sequence[Mapping[str, float]], *,
                   title: str = "Top-1 agreement against parameter saving, before and after "
                                "recovery") -> go.Figure:
    """One line per residual rank and stage: ``rows`` as ``benchmarks/share_recovery.py``
    writes them (``rank``, ``saving``, ``top1_before``, ``top1_after``, fractions)."""
    if not rows:
        raise ValueError("recovery_curve needs at least one row of the sharing benchmark")
    fig = go.Figure()
    for rank in sorted({int(r["rank"]) for r in rows}):
        mine = sorted((r for r in rows if int(r["rank"]) == rank), key=lambda r: r["saving"])
        for stage, dash in (("before", "dot"), ("after", "solid")):
            fig.add_trace(go.Scatter(
                x=[100 * r["saving"] for r in mine], y=[100 * r[f"top1_{stage}"] for r in mine],
                mode="lines+markers", line={"dash": dash},
                name=f"rank {rank}, {'recovered' if stage == 'after' else 'no recovery'}",
                hovertemplate="%{x:.1f}% saved: %{y:.0f}%<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="parameters saved (%)", height=420,
                      yaxis_title="top-1 agreement with the original (%)",
                      yaxis_range=[-5, 105])
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
    positive_int("cols", cols)
    positive_int("size", size)
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
                           title: str = "Accuracy against trainable parameters",
                           yaxis: str = "validation top-1 (%)") -> go.Figure:
    """One marker per method: trainable parameters (log scale) against accuracy, named in the
    legend (methods crowd together near the top; labels on the points would overlap).

    ``results`` maps a method's name to a mapping with ``"trainable"`` (parameters) and
    ``"top1"`` (accuracy in %), and optionally ``"spread"`` (an error bar of that many
    points either side, e.g. the standard deviation over seeds) and ``"seconds_per_step"``
    (shown on hover). ``yaxis`` names the accuracy.
    """
    if not results:
        raise ValueError("accuracy_vs_parameters needs at least one result")
    fig = go.Figure()
    symbols = ("circle", "square", "diamond", "triangle-up", "cross", "x", "star", "hexagon")
    for i, (name, row) in enumerate(results.items()):
        missing = {"trainable", "top1"} - set(row)
        if missing:
            raise ValueError(f"result {name!r} lacks {sorted(missing)}")
        fig.add_trace(go.Scatter(
            x=[row["trainable"]], y=[row["top1"]], mode="markers", name=name,
            marker={"size": 13, "symbol": symbols[i % len(symbols)], "opacity": 0.85},
            error_y=({"type": "data", "array": [row["spread"]], "visible": True}
                     if "spread" in row else None),
            customdata=[[row.get("seconds_per_step", float("nan"))]],
            hovertemplate="%{x:,} trainable<br>top-1 %{y:.1f}%<br>"
                          "%{customdata[0]:.3f} s per step<extra>%{fullData.name}</extra>"))
    fig.update_xaxes(type="log", title_text="trainable parameters (log scale)")
    fig.update_yaxes(title_text=yaxis)
    fig.update_layout(title=title, height=440, showlegend=True,
                      legend={"title": {"text": "method"}, "font": {"size": 11}})
    return fig


def similarity_heatmap(similarity, *, title: str | None = None) -> go.Figure:
    """A layer-by-layer similarity matrix (:func:`kdna.analysis.cka_matrix` or
    :func:`kdna.analysis.kernel_similarity`) as a heatmap; blank where not comparable."""
    matrix = similarity.matrix.detach().float().cpu()
    names = list(similarity.names)
    if matrix.shape != (len(names), len(names)):
        raise ValueError(f"matrix of shape {list(matrix.shape)} does not fit {len(names)} names")
    z = [[None if v != v else v for v in row] for row in matrix.tolist()]  # NaN -> gap
    low = min(0.0, float(matrix.nan_to_num(0).min()))
    fig = go.Figure(go.Heatmap(
        z=z, x=names, y=names, colorscale="Viridis", zmin=low, zmax=1.0,
        colorbar={"title": {"text": similarity.kind}},
        hovertemplate="%{y}<br>%{x}<br>%{z:.3f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", title_text="layer", tickfont={"size": 8})
    fig.update_xaxes(title_text="layer", tickfont={"size": 8}, tickangle=-60)
    size = max(520, 16 * len(names) + 260)
    fig.update_layout(title=title or f"{similarity.kind} between layers", width=size + 80,
                      height=size)
    return fig


def routing_heatmap(gates: torch.Tensor, *, layer: str, labels: Sequence[str] | None = None,
                    title: str | None = None, center: float = 1.0) -> go.Figure:
    """Gate vectors ``[inputs, channels]`` of one child as a heatmap, one row per input.

    The colour scale is centred on ``center`` (1 for kdna's identity gate: no change), so
    boosted channels and suppressed channels take opposite colours. ``labels`` names the rows
    (e.g. each input's class); sort the inputs by class to see class-specific routing.
    """
    gates = gates.detach().float().cpu()
    if gates.dim() != 2:
        raise ValueError(f"gates must be [inputs, channels], got shape {list(gates.shape)}")
    if labels is not None and len(labels) != gates.shape[0]:
        raise ValueError(f"{len(labels)} labels for {gates.shape[0]} inputs")
    spread = float((gates - center).abs().max()) or 1.0
    rows = list(labels) if labels is not None else [f"input {i}" for i in range(len(gates))]
    fig = go.Figure(go.Heatmap(
        z=gates.numpy(), y=list(range(len(rows))), colorscale="RdBu_r", zmid=center,
        zmin=center - spread, zmax=center + spread, customdata=[[r] * gates.shape[1] for r in rows],
        colorbar={"title": {"text": "gate"}},
        hovertemplate="input %{y} (%{customdata})<br>channel %{x}<br>gate %{z:.3f}<extra></extra>"))
    fig.update_xaxes(title_text="input channel of the child")
    fig.update_yaxes(title_text="input (rows grouped by label)" if labels is not None else "input",
                     autorange="reversed", showticklabels=False)
    fig.update_layout(title=title or f"Per-input routing of {layer}", height=480)
    return fig


def routing_profile(mean_per_class: torch.Tensor, *, classes: Sequence[str], layer: str,
                    title: str | None = None) -> go.Figure:
    """The mean gate per class ``[classes, channels]``: one line per class over the channels."""
    means = mean_per_class.detach().float().cpu()
    if means.dim() != 2 or len(classes) != means.shape[0]:
        raise ValueError(f"need [classes, channels] with one name per class, got shape "
                         f"{list(means.shape)} and {len(classes)} names")
    hover = "channel %{x}: %{y:.3f}<extra>%{fullData.name}</extra>"
    fig = go.Figure([go.Scatter(y=row.numpy(), mode="lines", name=str(name), hovertemplate=hover)
                     for name, row in zip(classes, means, strict=True)])
    fig.update_xaxes(title_text="input channel of the child")
    fig.update_yaxes(title_text="mean gate")
    fig.update_layout(title=title or f"Mean routing per class in {layer}",
                      legend_title_text="class", height=440)
    return fig


def attribution_overlay(image: np.ndarray, attribution: torch.Tensor, *, title: str,
                        opacity: float = 0.55) -> go.Figure:
    """An attribution map ``[h, w]`` drawn over an image (HWC or HW uint8), resized to it."""
    attribution = attribution.detach().float().cpu()
    if attribution.dim() != 2:
        raise ValueError(f"attribution must be [height, width], got {list(attribution.shape)}")
    height, width = image.shape[:2]
    heat = torch.nn.functional.interpolate(attribution[None, None], size=(height, width),
                                           mode="bilinear", align_corners=False)[0, 0]
    heat = heat / (heat.abs().max() or 1.0)
    fig = go.Figure([
        go.Image(source=_png_source(image, max(height, width)), name="image"),
        go.Heatmap(z=heat.numpy(), colorscale="Hot", opacity=opacity, zmin=0, zmax=1,
                   name="attribution", colorbar={"title": {"text": "attribution"}},
                   hovertemplate="x %{x}, y %{y}: %{z:.2f}<extra></extra>")])
    fig.update_xaxes(title_text="x (pixels)", showticklabels=False)
    fig.update_yaxes(title_text="y (pixels)", showticklabels=False, autorange="reversed",
                     scaleanchor="x")
    fig.update_layout(title=title, height=420, width=480)
    return fig


def layer_scores(scores: Mapping[str, float], *, title: str, yaxis: str) -> go.Figure:
    """One bar per layer (e.g. each child's routing specialisation), in the given order."""
    if not scores:
        raise ValueError("layer_scores needs at least one layer")
    fig = go.Figure(go.Bar(x=list(scores), y=list(scores.values()),
                           hovertemplate="%{x}: %{y:.3f}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="layer", yaxis_title=yaxis, height=420)
    fig.update_xaxes(tickangle=-45)
    return fig
