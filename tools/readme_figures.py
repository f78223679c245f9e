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
    """The routing that notebook 06 shows by default: the gated default method fine-tuned on
    the example digits (its run is reloaded from the cache root where the notebook left it,
    trained here otherwise: about a minute on a CPU)."""
    from torch.utils.data import DataLoader

    from kdna.analysis import capture_routing, gate_kinds, label_permutation_test
    from kdna.data import cache_root, write_example_folder
    from kdna.viz import routing_heatmap

    data = write_example_folder(cache_root("examples"), "digits")
    result = kdna.finetune("efficientnet_lite0", data,
                           method=kdna.finetune.default_method(gated=True), steps=120,
                           image_size=32, flip=False, device="cpu",
                           out=cache_root("06_routing"), progress=False)
    loader = DataLoader(result.splits.test, batch_size=100)
    batches = list(loader)  # the digits decoded once, for the gates and their labels
    routing = capture_routing(result.model, batches)
    labels = torch.cat([y for _, y in batches])
    tests = label_permutation_test(routing, labels, permutations=200, seed=0)
    by_class = [name for name, kind in gate_kinds(routing).items()
                if kind == "per-input" and tests[name].p_value < 0.01]
    chosen = max(by_class, key=lambda name: routing.gates[name].std(dim=0).mean().item())
    order = torch.argsort(labels, stable=True)
    fig = routing_heatmap(routing.gates[chosen][order], layer=chosen,
                          labels=[result.classes[i] for i in labels[order].tolist()],
                          title=f"Per-input routing of {chosen} after fine-tuning on real digits "
                                f"({len(labels)} held-out digits sorted 0 to 9, one row each)")
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
