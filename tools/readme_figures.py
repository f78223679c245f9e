"""Render the README's figures to PNG with headless Chromium (no kaleido, no network).

Usage: python tools/readme_figures.py   (needs Debian's `chromium`; writes docs/figures/)
"""

from __future__ import annotations

import sys
from pathlib import Path

import plotly.graph_objects as go
import torch
from render import screenshot  # tools/render.py, beside this script

import kdna
from kdna.viz import fit_errors, kernel_family

ROOT = Path(__file__).resolve().parents[1]


def kernel_family_example() -> go.Figure:
    torch.manual_seed(0)
    parent = kdna.ParentKernel(16, 16, 3)
    children = [parent.child(padding=1) for _ in range(3)]
    with torch.no_grad():
        for i, child in enumerate(children):
            child.filter_scale.normal_(0, 0.3 * i)
            child.spatial_scale.normal_(0, 0.3 * i)
    fig = kernel_family(parent, children, filters=(0, 1, 2))
    fig.update_layout(margin={"t": 90})
    return fig


def fit_errors_example() -> go.Figure:
    model = kdna.create_model("efficientnet_lite0", kernel_dna=False, weights="imagenet")
    report = kdna.convert(model)
    fig = fit_errors(report, title="Converting EfficientNet-Lite0: how well each child's "
                     "static scales reproduce the kernel it replaced")
    fig.update_layout(width=1000, height=520, margin={"b": 190})
    return fig


def routing_example() -> go.Figure:
    """The routing of the fine-tuned network that notebook 06 caches (run it first)."""
    from torch.utils.data import DataLoader

    from kdna.analysis import capture_routing, routing_statistics
    from kdna.data import cache_root, load_data
    from kdna.models import efficientnet_lite
    from kdna.train.checkpoint import load_checkpoint
    from kdna.viz import routing_heatmap

    state = load_checkpoint(cache_root("06_routing", "last.pt"))
    model = kdna.create_model("efficientnet_lite0", kernel_dna=False, num_classes=10)
    kdna.convert(model, groups=state["meta"]["layout"])
    model.load_state_dict(state["model"])
    data = load_data("mnist", image_size=48, mean=efficientnet_lite.MEAN,
                     std=efficientnet_lite.STD, limit=1280, seed=0)
    loader = DataLoader(data.val, batch_size=256)
    routing = capture_routing(model, loader)
    labels = torch.cat([y for _, y in loader])
    stats = routing_statistics(routing, labels)
    chosen = max(stats.specialisation, key=stats.specialisation.get)
    order = torch.argsort(labels, stable=True)[::5]
    fig = routing_heatmap(routing.gates[chosen][order], layer=chosen,
                          labels=[str(i) for i in labels[order].tolist()],
                          title=f"Per-input routing of {chosen} after fine-tuning on MNIST "
                                "(200 digits sorted 0 to 9, one row each)")
    fig.update_layout(width=1000, height=520)
    return fig


def main() -> int:
    out = ROOT / "docs" / "figures"
    out.mkdir(parents=True, exist_ok=True)
    for name, figure in (("kernel_family", kernel_family_example),
                         ("fit_errors", fit_errors_example), ("routing", routing_example)):
        screenshot(figure(), out / f"{name}.png")
        print(f"wrote {out / name}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
