"""Plotly figure builders: each returns a ``go.Figure`` with a title and labelled axes.

None of them shows the figure; the caller (a notebook, a widget, a report) decides.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from torch import nn

from kdna.nn import ChildConv2d, ParentKernel
from kdna.report import ConversionReport

__all__ = ["fit_errors", "kernel_family"]


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
