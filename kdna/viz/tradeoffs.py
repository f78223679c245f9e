"""Accuracy against a cost: one marker per network, the spread over seeds as an error bar.

:func:`accuracy_against` draws test accuracy against any measured quantity (inference
throughput relative to a plain network, parameters, MACs); a from-scratch comparison
(:mod:`kdna.scratch`) draws it twice, against throughput and against parameters. Returns a
titled ``go.Figure`` with labelled axes.
"""

from __future__ import annotations

from collections.abc import Mapping

from kdna._extras import require

go = require("plotly.graph_objects", "viz", "kdna.viz")  # ImportError naming kdna[viz]

__all__ = ["accuracy_against"]

_SYMBOLS = ("circle", "square", "diamond", "triangle-up", "cross", "x", "star", "hexagon",
            "pentagon", "triangle-down")


def accuracy_against(results: Mapping[str, Mapping[str, float]], key: str, *,
                     xaxis: str | None = None, log: bool = False,
                     title: str | None = None, yaxis: str = "test top-1 (%)",
                     highlight: str = "KernelDNA") -> go.Figure:
    """One marker per network: ``row[key]`` on the x axis against ``row["top1"]`` (accuracy
    in %), with an error bar of ``row["spread"]`` points either side where given (e.g. the
    standard deviation over seeds).

    ``results`` maps a network's label to its row. ``log``: a log-scaled x axis (parameters,
    MACs). Networks whose label contains ``highlight`` get filled markers with a dark
    outline, the others open ones, so the method under test stands out in grey too.
    """
    if not results:
        raise ValueError("accuracy_against needs at least one result")
    fig = go.Figure()
    for i, (name, row) in enumerate(results.items()):
        missing = {key, "top1"} - set(row)
        if missing:
            raise ValueError(f"result {name!r} lacks {sorted(missing)}")
        mine = highlight and highlight in name
        symbol = _SYMBOLS[i % len(_SYMBOLS)] + ("" if mine else "-open")
        fig.add_trace(go.Scatter(
            x=[row[key]], y=[row["top1"]], mode="markers", name=name,
            marker={"size": 15 if mine else 12, "symbol": symbol,
                    "line": {"width": 2 if mine else 1, "color": "#222"}},
            error_y=({"type": "data", "array": [row["spread"]], "visible": True}
                     if "spread" in row else None),
            hovertemplate=f"{key} %{{x:.3g}}<br>top-1 %{{y:.1f}}%"
                          f"<extra>%{{fullData.name}}</extra>"))
    label = xaxis or key
    fig.update_xaxes(type="log" if log else "linear",
                     title_text=f"{label} (log scale)" if log else label)
    fig.update_yaxes(title_text=yaxis)
    fig.update_layout(title=title or f"Accuracy against {label}", height=460,
                      showlegend=True, legend={"title": {"text": "network"},
                                               "font": {"size": 11}})
    return fig
