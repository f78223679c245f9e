"""Render plotly figures in a real browser: headless Chromium, no kaleido, no network.

Used to make the README's PNGs (``tools/readme_figures.py``) and by the test that checks the
figures really draw in a browser. Needs Debian's ``chromium`` (``make test`` installs it).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import plotly.graph_objects as go

__all__ = ["BROWSER_FLAGS", "CHROMIUM_FLAGS", "find_chromium", "render_dom", "screenshot"]

# Chromium on this closed network, as root, without a GPU, however it is driven (here from the
# command line, by Playwright in tests/test_lab_browser.py): no sandbox, and no connection of
# its own (background fetches are refused by the network, many at a time, otherwise).
BROWSER_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
CHROMIUM_FLAGS = ["--headless", *BROWSER_FLAGS, "--hide-scrollbars",
                  "--virtual-time-budget=5000"]


def find_chromium() -> str:
    """The Chromium executable; ``FileNotFoundError`` saying how to install it if absent."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise FileNotFoundError("Chromium not found: install Debian's `chromium` package "
                                "(`make test` does, where apt-get and root are available)")
    return browser


def _run(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([find_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                           *args, page.as_uri()], check=True, capture_output=True, timeout=120)


def screenshot(fig: go.Figure, path: str | Path, *, width: int | None = None,
               height: int | None = None) -> Path:
    """Write ``fig`` to ``path`` as a PNG, drawn by the real plotly.js in headless Chromium."""
    path = Path(path)
    width, height = int(width or fig.layout.width or 900), int(height or fig.layout.height or 600)
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "figure.html"
        fig.write_html(page, include_plotlyjs=True, full_html=True, config={"staticPlot": True})
        _run(page, Path(tmp) / "profile", f"--window-size={width},{height}",
             f"--screenshot={path.resolve()}")
    return path


def render_dom(html: str | Path) -> str:
    """The page's DOM after its scripts ran (``--dump-dom``), for an HTML file."""
    with tempfile.TemporaryDirectory() as tmp:
        return _run(Path(html).resolve(), Path(tmp) / "profile", "--dump-dom").stdout.decode()
