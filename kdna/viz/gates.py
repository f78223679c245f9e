"""How one input is routed through one child: its gate, the channels it changes most, the
kernel that gating amounts to, and two inputs' gates side by side (plotly figures).

:class:`kdna.viz.widgets.RoutingExplorer` shows these interactively; each function works on its
own too, so a notebook can show the same views statically first.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from kdna._checks import positive_int
from kdna._extras import require
from kdna.nn.functional import gated_kernels

go = require("plotly.graph_objects", "viz", "kdna.viz")  # ImportError naming kdna[viz]
make_subplots = require("plotly.subplots", "viz", "kdna.viz").make_subplots

__all__ = ["changed_channels_html", "effective_kernel_figure", "gate_comparison_figure",
           "gate_figure"]

_BOOSTED, _SUPPRESSED, _OTHER = "#2ca02c", "#d62728", "#9aa5b1"


def gate_figure(gate: Tensor, *, boosted: Sequence[int] = (), suppressed: Sequence[int] = (),
                title: str = "Input gate") -> go.Figure:
    """Bar chart of one gate vector ``[C]`` by input channel, with the line gate = 1
    (channel passed unchanged); ``boosted`` / ``suppressed`` channels are coloured."""
    values = gate.detach().float().cpu()
    colours = [_OTHER] * len(values)
    for channels, colour in ((suppressed, _SUPPRESSED), (boosted, _BOOSTED)):
        for c in channels:
            colours[c] = colour
    fig = go.Figure(go.Bar(x=list(range(len(values))), y=values.tolist(), marker_color=colours,
                           name="gate", hovertemplate="channel %{x}: %{y:.3f}<extra></extra>"))
    fig.add_hline(y=1, line_dash="dash", annotation_text="gate = 1 (unchanged)")
    fig.update_layout(title=title, xaxis_title="input channel", yaxis_title="gate value",
                      height=320, bargap=0.1)
    fig.update_yaxes(rangemode="tozero")
    return fig


def gate_comparison_figure(first: Tensor, second: Tensor, *, names: Sequence[str] = ("A", "B"),
                           title: str = "Gates of two inputs") -> go.Figure:
    """The gate vectors of two inputs on one chart (top) and their difference (bottom)."""
    a, b = first.detach().float().cpu(), second.detach().float().cpu()
    if a.shape != b.shape or a.dim() != 1:
        raise ValueError(f"need two gate vectors [C] of one child, got shapes {list(a.shape)} "
                         f"and {list(b.shape)}")
    channels = list(range(len(a)))
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        row_heights=[0.6, 0.4])
    for values, name in ((a, names[0]), (b, names[1])):
        fig.add_trace(go.Scatter(x=channels, y=values.tolist(), mode="lines+markers", name=name,
                                 marker_size=4), row=1, col=1)
    fig.add_trace(go.Bar(x=channels, y=(a - b).tolist(), name=f"{names[0]} - {names[1]}",
                         marker_color=_OTHER), row=2, col=1)
    fig.add_hline(y=1, line_dash="dash", row=1, col=1)
    fig.update_yaxes(title_text="gate value", row=1, col=1)
    fig.update_yaxes(title_text="difference", row=2, col=1)
    fig.update_xaxes(title_text="input channel", row=2, col=1)
    fig.update_layout(title=title, height=440, legend_orientation="h", legend_y=1.08)
    return fig


def effective_kernel_figure(child: nn.Module, gate: Tensor, channel: int, *, filters: int = 4,
                            title: str = "Kernel for this input") -> go.Figure:
    """Heatmaps of a child's kernels that read input ``channel``: static (top row) and with
    this input's gate folded into the input columns (bottom row, ``gated_kernels``), for the
    first ``filters`` output filters that read the channel."""
    positive_int("filters", filters)
    weight = child.static_weight().detach().float().cpu()
    if weight.dim() == 2:  # a ChildLinear: a 1x1 convolution
        weight = weight[:, :, None, None]
    groups = getattr(child, "groups", 1)
    per_group, out_per_group = weight.shape[1], weight.shape[0] // groups
    if not 0 <= channel < per_group * groups:
        raise ValueError(f"channel must lie in [0, {per_group * groups}), got {channel}")
    gated = gated_kernels(weight, gate.detach().float().cpu()[None], groups)[0]
    first = channel // per_group * out_per_group
    chosen = list(range(first, first + min(filters, out_per_group)))
    rows = {"static": weight, f"gated (x {float(gate[channel]):.2f})": gated}
    fig = make_subplots(rows=2, cols=len(chosen), row_titles=list(rows),
                        column_titles=[f"filter {f}" for f in chosen],
                        horizontal_spacing=0.03, vertical_spacing=0.08)
    limit = max(float(w[chosen, channel % per_group].abs().max()) for w in rows.values()) or 1.0
    for row, (name, kernels) in enumerate(rows.items(), 1):
        for col, f in enumerate(chosen, 1):
            fig.add_trace(go.Heatmap(
                z=kernels[f, channel % per_group].numpy(), coloraxis="coloraxis",
                name=f"{name}, filter {f}",
                hovertemplate="row %{y}, column %{x}: %{z:.4f}<extra>%{fullData.name}</extra>"),
                row=row, col=col)
    fig.update_yaxes(autorange="reversed", showticklabels=False)
    fig.update_xaxes(showticklabels=False)
    fig.update_xaxes(title_text="kernel column", row=2)
    fig.update_yaxes(title_text="kernel row", col=1)
    fig.update_layout(title=f"{title} (input channel {channel})", height=380,
                      coloraxis={"colorscale": "RdBu", "cmin": -limit, "cmax": limit,
                                 "colorbar": {"title": {"text": "weight"}}})
    return fig


def changed_channels_html(gate: Tensor, boosted: Sequence[int], suppressed: Sequence[int]) -> str:
    """An HTML table: the most boosted and the most suppressed channels, each with its gate."""
    def row(title: str, channels: Sequence[int]) -> str:
        cells = "".join(f"<td>channel {c}: {float(gate[c]):.3f}</td>" for c in channels)
        return f"<tr><th>{title}</th>{cells}</tr>"

    return f"<table>{row('most boosted', boosted)}{row('most suppressed', suppressed)}</table>"
