"""The routing explorer works in JupyterLab itself, driven through a real browser.

JupyterLab is started on 127.0.0.1 with a token, in a temporary folder that holds a copy of
notebook 06; headless Chromium (Debian's, driven by Playwright: no browser download) opens it,
runs every cell, then uses the explorer's own controls, as a reader would, to pick another
image and another child, and checks each time that the gate figure drawn in the page changed.
Screenshots go to ``build/browser/``.

The test runs after the notebooks in ``make test`` (marker ``after_notebooks``), so notebook
06's fine-tuning is read from the cache that nbval's run left under ``$KDNA_CACHE``. It is
skipped, saying why, only where Chromium is not installed (``make test`` installs it where
apt-get and root are available).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from render import BROWSER_FLAGS, find_chromium

try:
    CHROMIUM = find_chromium()
except FileNotFoundError as missing:
    pytest.skip(f"{missing}; the JupyterLab browser test needs it", allow_module_level=True)

from playwright.sync_api import Page, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "06_routing_explorer.ipynb"
SHOTS = ROOT / "build" / "browser"
RUN_TIMEOUT_MS = 540_000  # the whole notebook, from a cold cache in the worst case

pytestmark = pytest.mark.after_notebooks


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """(url of the notebook with its token, the server process) for a fresh JupyterLab."""
    root = tmp_path_factory.mktemp("lab")
    shutil.copy(NOTEBOOK, root)
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(root / ".config"),
           "JUPYTER_RUNTIME_DIR": str(root / ".runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(root / ".settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(root / ".workspaces")}
    news = root / ".settings" / "@jupyterlab" / "apputils-extension"
    news.mkdir(parents=True)
    (news / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
               f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
               "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
               *(["--allow-root"] if os.getuid() == 0 else [])]
    with open(root / "lab.log", "w") as log:
        server = subprocess.Popen(command, cwd=root, env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
        try:
            _wait_for(f"http://127.0.0.1:{port}/api/status?token={token}", server,
                      root / "lab.log")
            yield f"http://127.0.0.1:{port}/lab/tree/{NOTEBOOK.name}?token={token}"
        finally:
            server.terminate()
            server.wait(timeout=30)


def _wait_for(url: str, server: subprocess.Popen, log: Path, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"JupyterLab exited with {server.returncode}:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"JupyterLab did not answer within {seconds:.0f} s:\n{log.read_text()[-2000:]}")


NOTEBOOK_STATE = """() => {
  const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  if (!panel || !panel.content || !panel.sessionContext.session) return null;
  const cells = panel.content.widgets.filter(c => c.model.type === 'code');
  const outputs = cells.map(c => c.model.outputs.toJSON());
  return {kernel: panel.sessionContext.session.kernel.status,
          run: cells.filter(c => c.model.executionCount !== null).length, cells: cells.length,
          errors: outputs.flat().filter(o => o.output_type === 'error')
                         .map(o => o.ename + ': ' + o.evalue)};
}"""

GATE_FIGURE = """() => {
  const plots = [...document.querySelectorAll('.js-plotly-plot')];
  const gate = plots.find(p => p.layout && p.layout.title &&
                               /input gate for image/.test(p.layout.title.text || ''));
  return gate ? {title: gate.layout.title.text,
                 values: gate.data.map(t => Array.from(t.y || t.z || []))} : null;
}"""


def _run_all(page: Page) -> dict:
    page.wait_for_function(f"({NOTEBOOK_STATE})()?.kernel === 'idle'", timeout=120_000)
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_function(
        f"(() => {{ const s = ({NOTEBOOK_STATE})(); return s && s.kernel === 'idle' && "
        f"(s.run === s.cells || s.errors.length > 0); }})()",
        timeout=RUN_TIMEOUT_MS, polling=1000)
    return page.evaluate(NOTEBOOK_STATE)


def _gate_after(page: Page, change, old_title: str) -> dict:
    """Use a control, then wait until the gate figure shows a new title and return it."""
    change()
    page.wait_for_function(f"(() => {{ const g = ({GATE_FIGURE})(); "
                           f"return g && g.title !== {json.dumps(old_title)}; }})()",
                           timeout=60_000)
    return page.evaluate(GATE_FIGURE)


def test_routing_explorer_responds_to_its_controls_in_jupyterlab(lab):
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1400})
            page.goto(lab, timeout=120_000)
            state = _run_all(page)
            assert not state["errors"], f"cells failed in JupyterLab: {state['errors']}"
            assert state["run"] == state["cells"]
            explorer = page.locator(".widget-vbox").filter(
                has=page.locator(".widget-dropdown label", has_text="child")).first
            explorer.scroll_into_view_if_needed()
            page.wait_for_function(f"({GATE_FIGURE})() !== null", timeout=60_000)
            first = page.evaluate(GATE_FIGURE)
            explorer.screenshot(path=SHOTS / "explorer-first.png")

            image = explorer.locator(".widget-dropdown").filter(
                has=page.locator("label", has_text="image")).locator("select")
            second = _gate_after(page, lambda: image.select_option(index=7), first["title"])
            assert "image 7" in second["title"]
            assert second["values"] != first["values"], "another image, the same gates"
            explorer.screenshot(path=SHOTS / "explorer-other-image.png")

            child = explorer.locator(".widget-dropdown").filter(
                has=page.locator("label", has_text="child")).locator("select")
            current = second["title"].split(":")[0]
            others = [n for n in child.locator("option").all_inner_texts() if n != current]
            assert others, "the explorer offers one child only"
            third = _gate_after(page, lambda: child.select_option(label=others[-1]),
                                second["title"])
            assert third["title"].startswith(f"{others[-1]}:")
            assert third["values"] != second["values"], "another child, the same gates"
            explorer.screenshot(path=SHOTS / "explorer-other-child.png")
        finally:
            browser.close()
