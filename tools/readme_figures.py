"""Render the README's figures to PNG with headless Chromium (no kaleido, no network).

Usage: python tools/readme_figures.py   (needs Debian's `chromium`; writes docs/figures/)
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import plotly.graph_objects as go
import torch

import kdna
from kdna.viz import fit_errors, kernel_family

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                  "--disable-background-networking", "--disable-component-update",
                  "--no-first-run", "--virtual-time-budget=5000"]


def screenshot(fig: go.Figure, path: Path) -> None:
    """Write ``fig`` to ``path`` as a PNG, rendered by the real plotly.js in Chromium."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise FileNotFoundError("Chromium not found: install Debian's `chromium` package")
    width, height = int(fig.layout.width or 900), int(fig.layout.height or 600)
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "figure.html"
        fig.write_html(page, include_plotlyjs=True, full_html=True,
                       config={"staticPlot": True})
        subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp}/profile",
                        f"--window-size={width},{height}", f"--screenshot={path}", page.as_uri()],
                       check=True, capture_output=True, timeout=120)


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


def main() -> int:
    out = ROOT / "docs" / "figures"
    out.mkdir(parents=True, exist_ok=True)
    for name, figure in (("kernel_family", kernel_family_example),
                         ("fit_errors", fit_errors_example)):
        screenshot(figure(), out / f"{name}.png")
        print(f"wrote {out / name}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
