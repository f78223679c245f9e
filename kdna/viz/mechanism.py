"""Pictures of the mechanism itself (plotly figures): a parent kernel beside its children's
kernels, and the path an input takes through one child (its gate, then one convolution).

Each function returns a titled ``go.Figure`` and shows nothing; notebook 01 draws them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from kdna._extras import require
from kdna.nn.conv import ChildConv2d, ParentKernel

go = require("plotly.graph_objects", "viz", "kdna.viz")  # ImportError naming kdna[viz]
make_subplots = require("plotly.subplots", "viz", "kdna.viz").make_subplots

__all__ = ["gate_pipeline", "kernel_family", "parent_and_children"]

Kernel = Tensor | nn.Module  # a [C_out, C_in, kh, kw] tensor, or a module that holds one


def _kernel(name: str, value: Kernel) -> Tensor:
    """The 4-D kernel of ``value``: a tensor, a child's ``static_weight()`` or a ``weight``."""
    kernel = value
    if isinstance(value, nn.Module):
        kernel = value.static_weight() if hasattr(value, "static_weight") else getattr(
            value, "weight", None)
    if not isinstance(kernel, Tensor) or kernel.dim() != 4:
        raise TypeError(f"{name} must be a 4-D kernel [C_out, C_in, kh, kw], a child or a "
                        f"convolution, got {type(value).__name__}"
                        + (f" of shape {list(kernel.shape)}" if isinstance(kernel, Tensor)
                           else ""))
    return kernel


def _slices(kernels: Mapping[str, Tensor], filters: Sequence[int], channel: int
            ) -> tuple[dict[str, Tensor], float]:
    """``name -> [len(filters), kh, kw]`` (input ``channel`` of each filter), and the largest
    magnitude among them: the half-width of a colour scale that all panels share."""
    shape = next(iter(kernels.values())).shape
    for name, kernel in kernels.items():
        if kernel.shape != shape:
            raise ValueError(f"{name} has kernel shape {list(kernel.shape)}, the parent "
                             f"{list(shape)}: a child has its parent's shape")
    bad = [f for f in filters if not 0 <= f < shape[0]]
    if bad or not filters or not 0 <= channel < shape[1]:
        raise ValueError(f"filters {list(filters)} must be a non-empty list in [0, {shape[0]}) "
                         f"and channel {channel} in [0, {shape[1]})")
    with torch.no_grad():
        slices = {name: k[list(filters), channel].float().cpu() for name, k in kernels.items()}
    return slices, max(s.abs().max().item() for s in slices.values()) or 1.0


def _named(children: Sequence | Mapping) -> dict:
    """``name -> child``: a mapping as given, a sequence as ``child 1``, ``child 2``, ..."""
    named = dict(children) if isinstance(children, Mapping) else {
        f"child {i}": child for i, child in enumerate(children, 1)}
    if not named:
        raise ValueError("need at least one child")
    return named


def _colour_axis(limit: float) -> dict:
    return {"colorscale": "RdBu", "cmin": -limit, "cmax": limit,
            "colorbar": {"title": {"text": "weight"}}}


def parent_and_children(
    parent: Kernel,
    children: Sequence[Kernel] | Mapping[str, Kernel],
    *,
    filters: Sequence[int] = (0, 1, 2, 3),
    channel: int = 0,
    title: str = "A parent kernel and its children",
) -> go.Figure:
    """One panel per kernel (the parent, then each child), side by side on one colour scale.

    A panel shows the ``kh x kw`` taps that read input ``channel`` for each output filter in
    ``filters``, left to right with a blank column between filters. ``parent`` and each child
    may be a kernel tensor, a module with ``static_weight()`` (a :class:`ChildConv2d`, or one
    written from scratch) or a module with a ``weight``. A child ``P * (1 + f) * (1 + s)``
    keeps its parent's pattern, each filter rescaled (f) and each tap reweighted (s).
    """
    kernels = {"parent": _kernel("parent", parent)}
    kernels |= {name: _kernel(name, child) for name, child in _named(children).items()}
    slices, limit = _slices(kernels, filters, channel)
    kh, kw = next(iter(slices.values())).shape[1:]
    fig = make_subplots(rows=1, cols=len(slices), subplot_titles=list(slices),
                        horizontal_spacing=0.03)
    for col, (name, block) in enumerate(slices.items(), 1):
        gap = torch.full((kh, 1), float("nan"))
        z = torch.cat([torch.cat([k, gap], dim=1) for k in block], dim=1)[:, :-1]
        fig.add_trace(go.Heatmap(
            z=[[None if v != v else v for v in row] for row in z.tolist()],
            coloraxis="coloraxis", name=name,
            hovertemplate="row %{y}, column %{x}: %{z:.4f}<extra>%{fullData.name}</extra>"),
            row=1, col=col)
        fig.update_xaxes(tickvals=[i * (kw + 1) + (kw - 1) / 2 for i in range(len(filters))],
                         ticktext=[f"f{f}" for f in filters], row=1, col=col)
    fig.update_yaxes(autorange="reversed", showticklabels=False, showgrid=False, zeroline=False,
                     scaleanchor="x", constrain="domain")
    fig.update_yaxes(title_text="kernel row", col=1)
    fig.update_xaxes(title_text="output filter", showgrid=False, zeroline=False,
                     constrain="domain")
    fig.update_layout(title=f"{title} (input channel {channel}, {kh}x{kw} taps per filter)",
                      coloraxis=_colour_axis(limit), height=300, plot_bgcolor="white",
                      width=max(560, 70 * len(filters) * len(slices) + 180))
    return fig


def kernel_family(
    parent: ParentKernel | nn.Conv2d,
    children: Sequence[ChildConv2d] | Mapping[str, ChildConv2d],
    *,
    filters: Sequence[int] = (0, 1, 2),
    channel: int = 0,
    title: str = "A parent kernel and its children",
) -> go.Figure:
    """Heatmaps of a parent kernel beside its children's static kernels, one row per filter.

    One row per output filter in ``filters``, one column for the parent and one per child,
    all on one colour scale, each cell the ``kh x kw`` kernel that reads input ``channel``.
    Unlike :func:`parent_and_children` (any kernels, one row), every child must be a child
    of ``parent``: the figure shows one family of a converted network.
    """
    named = _named(children)
    for name, child in named.items():
        if child.parent.weight is not parent.weight:
            raise ValueError(f"{name} is not a child of the given parent")
    kernels = {"parent": parent.weight} | {n: c.static_weight() for n, c in named.items()}
    slices, limit = _slices(kernels, filters, channel)
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
    fig.update_layout(title=f"{title} (input channel {channel})", coloraxis=_colour_axis(limit),
                      height=140 * len(filters) + 120, width=160 * len(slices) + 160)
    return fig


def _pipeline_boxes(child: ChildConv2d, shape: Sequence[int]) -> list[tuple]:
    """``(label, tensor shape, x, y)`` of every step of ``child`` on an input of ``shape``."""
    b, c, h, w = shape
    hidden = child.gate.fc1.out_features
    weight = child.parent.weight
    with torch.device("meta"):  # shapes only: nothing is computed
        out = torch.nn.functional.conv2d(
            torch.empty(b, c, h, w), torch.empty(weight.shape), None, child.stride,
            child.padding, child.dilation, child.groups).shape
    act = "sigmoid" if child.gate.form == "paper" else "2·sigmoid"
    return [("input x", (b, c, h, w), 0.0, 0.0), ("average pool", (b, c), 1.5, 2.0),
            ("fc1 (no bias)", (b, hidden), 3.0, 2.0), ("BatchNorm", (b, hidden), 4.5, 2.0),
            ("ReLU", (b, hidden), 6.0, 2.0), ("fc2", (b, c), 7.5, 2.0),
            (f"g = {act}", (b, c), 9.0, 2.0), ("scale: x·g", (b, c, h, w), 9.0, 0.0),
            ("P·(1+f)·(1+s)", tuple(weight.shape), 10.5, 2.0),
            ("one conv2d", tuple(out), 10.5, 0.0), ("output", tuple(out), 12.0, 0.0)]


_HALF_WIDTH, _HALF_HEIGHT = 0.65, 0.42  # of a box, in the diagram's coordinates


def _ends(start: tuple[float, float], end: tuple[float, float]
          ) -> tuple[tuple[float, float], tuple[float, float]]:
    """Where an arrow between the boxes centred at ``start`` and ``end`` leaves and arrives:
    on the sides they face (left/right when level, top/bottom otherwise)."""
    (x0, y0), (x1, y1) = start, end
    if y0 == y1:
        side = _HALF_WIDTH if x1 > x0 else -_HALF_WIDTH
        return (x0 + side, y0), (x1 - side, y1)
    side = _HALF_HEIGHT if y1 > y0 else -_HALF_HEIGHT
    return (x0, y0 + side), (x1, y1 - side)


# Arrows between the boxes above, by index: the gate's chain, then the convolution's path.
_ARROWS = ((0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 6), (6, 7), (0, 7), (7, 9), (8, 9),
           (9, 10))


def gate_pipeline(child: ChildConv2d, input_shape: Sequence[int] | None = None, *,
                  title: str = "Inside a child: the gate, then one convolution") -> go.Figure:
    """The path of an input through ``child`` as boxes and arrows, each box with the shape of
    the tensor it produces for an input of ``input_shape`` (by default ``[8, C_in, 16, 16]``).

    Top row: the squeeze-excitation gate (pool, fc1, BatchNorm, ReLU, fc2, sigmoid, or
    ``2·sigmoid`` for the identity form) makes one weight per input channel and sample. Bottom
    row: the input scaled by those weights, then one ordinary convolution with the child's
    static kernel. A diagram: its axes carry no scale, the x axis title is its caption.
    """
    if not isinstance(child, ChildConv2d) or child.gate is None:
        raise ValueError(f"gate_pipeline needs a ChildConv2d with a gate, got "
                         f"{type(child).__name__}" + (" without a gate" if isinstance(
                             child, ChildConv2d) else ""))
    shape = tuple(input_shape or (8, child.in_channels, 16, 16))
    if len(shape) != 4 or shape[1] != child.in_channels:
        raise ValueError(f"input_shape must be [batch, {child.in_channels}, height, width], "
                         f"got {list(shape)}")
    boxes = _pipeline_boxes(child, shape)
    fig = go.Figure(go.Scatter(
        x=[x for *_, x, _ in boxes], y=[y for *_, y in boxes], mode="markers", name="steps",
        marker={"size": 1, "opacity": 0}, text=[f"{label}: {list(s)}" for label, s, *_ in boxes],
        hovertemplate="%{text}<extra></extra>"))
    for label, size, x, y in boxes:
        colour = "#fde2c4" if y > 1 else "#d6e6f5"
        fig.add_shape(type="rect", x0=x - _HALF_WIDTH, x1=x + _HALF_WIDTH, y0=y - _HALF_HEIGHT,
                      y1=y + _HALF_HEIGHT,
                      fillcolor=colour, line={"color": "#44546a"})
        fig.add_annotation(x=x, y=y, text=f"<b>{label}</b><br>{list(size)}", showarrow=False,
                           font={"size": 10})
    for start, end in _ARROWS:
        (x0, y0), (x1, y1) = _ends(boxes[start][2:], boxes[end][2:])
        fig.add_annotation(x=x1, y=y1, ax=x0, ay=y0, xref="x", yref="y", axref="x", ayref="y",
                           showarrow=True, arrowhead=2, arrowwidth=1.5, text="")
    fig.update_xaxes(range=[-0.9, 12.9], showticklabels=False, showgrid=False, zeroline=False,
                     title_text="top: the gate, one weight per (sample, input channel) · "
                                "bottom: the input scaled, then one convolution")
    fig.update_yaxes(range=[-0.8, 2.8], showticklabels=False, showgrid=False, zeroline=False,
                     title_text="")
    fig.update_layout(title=title, height=340, width=1100, showlegend=False,
                      plot_bgcolor="white", margin={"l": 20, "r": 20})
    return fig
