"""The figures draw in a real browser: standalone HTML rendered by headless Chromium.

`make test` installs Debian's chromium where it can (root and apt-get); elsewhere this test is
skipped, saying so.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from kdna.viz import routing_heatmap, similarity_heatmap

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from render import find_chromium, render_dom, screenshot

try:
    find_chromium()
except FileNotFoundError as missing:
    pytest.skip(f"{missing}; the browser check needs it", allow_module_level=True)


def _figures():
    gen = torch.Generator().manual_seed(0)
    gates = 1 + 0.4 * torch.randn(24, 32, generator=gen)
    routing = routing_heatmap(gates, layer="features.6.1.expand.conv",
                              labels=[str(i % 10) for i in range(24)])
    matrix = torch.rand(6, 6, generator=gen)
    similarity = similarity_heatmap(SimpleNamespace(
        names=[f"layer{i}" for i in range(6)], matrix=(matrix + matrix.T) / 2, kind="linear CKA"))
    return {"routing": routing, "similarity": similarity}


@pytest.mark.parametrize("name", ["routing", "similarity"])
def test_figure_renders_in_headless_chromium(tmp_path, name):
    fig = _figures()[name]
    html = tmp_path / f"{name}.html"
    fig.write_html(html, include_plotlyjs=True, full_html=True)
    dom = render_dom(html)
    assert 'class="plot-container plotly"' in dom and 'class="main-svg"' in dom
    assert fig.layout.title.text in dom  # plotly.js drew the title into the SVG
    png = screenshot(fig, tmp_path / f"{name}.png", width=800, height=500)
    pixels = np.asarray(Image.open(png).convert("RGB"))
    assert pixels.shape[:2] == (500, 800)
    coloured = (np.abs(pixels.astype(int) - 255).sum(axis=2) > 60).mean()
    assert coloured > 0.05, f"only {coloured:.1%} of the screenshot is not white"
