"""The site to read (``make docs``, tools/docs_site.py): built offline from executed notebooks,
opened in headless Chromium, with the notebooks' plotly figures drawn.

The build test runs after the notebooks (marker ``after_notebooks``) and uses the notebooks that
nbval has just executed in the same session; run alone, it executes notebook 01 itself.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from docs_site import (
    PLOTLY,
    STAMP,
    build,
    executed_notebooks,
    nbval_outputs,
    save_notebook,
    source_hash,
    static_outputs,
    with_outputs,
)
from notebook_links import repository_url
from render import find_chromium, render_dom

ROOT = Path(__file__).resolve().parents[1]
FIRST = ROOT / "notebooks" / "01_parent_child_kernels.ipynb"


def _figure_output() -> dict:
    import plotly.graph_objects as go

    fig = go.Figure(go.Bar(y=[1, 3, 2]), layout={"title": {"text": "three bars"}})
    return nbformat.v4.new_output("display_data", data={PLOTLY: fig.to_plotly_json()})


def test_with_outputs_numbers_cells_and_stamps_the_source(tmp_path):
    source = tmp_path / "n.ipynb"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# t"),
                                         nbformat.v4.new_code_cell("1"),
                                         nbformat.v4.new_code_cell("print(2)")])
    nbformat.write(nb, source)
    result = nbformat.v4.new_output("execute_result", data={"text/plain": "1"})
    out = with_outputs(source, [[result], [nbformat.v4.new_output("stream", text="2\n")]])
    code = [c for c in out.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == [1, 2]
    assert code[0].outputs[0]["execution_count"] == 1 and code[1].outputs[0]["text"] == "2\n"
    assert out.metadata[STAMP] == source_hash(source)
    nbformat.validate(out)
    with pytest.raises(ValueError, match="has 2 code cells, got outputs for 1"):
        with_outputs(source, [[]])


def test_nbval_outputs_keeps_only_notebooks_that_ran_without_an_error():
    class Cell:
        def __init__(self, path, outputs):
            self.parent = type("File", (), {"fspath": path})()
            self.cell_num, self.test_outputs = 0, outputs

    error = {"output_type": "error", "ename": "AssertionError", "evalue": "", "traceback": []}
    items = [Cell("a.ipynb", []), Cell("a.ipynb", [{"output_type": "stream"}]),
             Cell("b.ipynb", []), Cell("b.ipynb", [error]), Cell("c.ipynb", None)]
    assert list(nbval_outputs(items)) == [Path("a.ipynb")]


def test_static_outputs_draw_plotly_with_the_page_script_and_name_widgets():
    widget = nbformat.v4.new_output("display_data", data={
        "application/vnd.jupyter.widget-view+json": {"model_id": "x"}, "text/plain": "VBox()"})
    cell = nbformat.v4.new_code_cell("fig", outputs=[_figure_output(), widget])
    out = static_outputs(nbformat.v4.new_notebook(cells=[cell])).cells[0].outputs
    assert PLOTLY in cell.outputs[0]["data"]  # the input is left as it was
    assert list(out[0]["data"]) == ["text/html"]
    assert "Plotly.newPlot" in out[0]["data"]["text/html"] and "<script src" not in \
        out[0]["data"]["text/html"]
    assert "run this notebook" in out[1]["data"]["text/html"]


def test_an_up_to_date_executed_copy_is_reused_and_a_stale_one_is_not(tmp_path, monkeypatch):
    source = tmp_path / "src" / "n.ipynb"
    source.parent.mkdir()
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1")]), source)
    done = with_outputs(source, [[nbformat.v4.new_output("stream", text="kept")]])
    save_notebook(done, tmp_path / "executed" / "n.ipynb")
    assert executed_notebooks([source], tmp_path / "executed") == [tmp_path / "executed" /
                                                                   "n.ipynb"]
    assert "kept" in (tmp_path / "executed" / "n.ipynb").read_text()  # reused, not re-run
    source.write_text(source.read_text().replace("1 + 1", "2 + 2"))
    executed_notebooks([source], tmp_path / "executed", timeout=120)  # stale: executed again
    again = nbformat.read(tmp_path / "executed" / "n.ipynb", as_version=4)
    assert again.metadata[STAMP] == source_hash(source)
    assert again.cells[0].outputs[0]["data"]["text/plain"] == "4"
    assert not list((tmp_path / "executed").glob(".*.tmp"))  # no temporary file left


@pytest.mark.after_notebooks
def test_the_site_builds_offline_and_draws_the_notebook_figures(request, tmp_path):
    try:
        find_chromium()
    except FileNotFoundError as missing:
        pytest.skip(f"{missing}; opening the site needs it")
    notebooks = []
    for source, outputs in nbval_outputs(request.session.items).items():  # from this session
        notebooks.append(tmp_path / "executed" / source.name)
        save_notebook(with_outputs(source, outputs), notebooks[-1])
    if not any(p.name == FIRST.name for p in notebooks):
        notebooks += executed_notebooks([FIRST], tmp_path / "executed")
    index = build(notebooks, tmp_path / "site", tmp_path / "sources")

    home = render_dom(index)
    assert "KernelDNA, learned by building it" in home
    assert 'href="notebooks/01_parent_child_kernels.html"' in home  # README links kept
    assert "https://fonts.googleapis.com" not in home  # offline: no web fonts
    page = render_dom(index.parent / "notebooks" / "01_parent_child_kernels.html")
    figures = len(re.findall(r'class="plotly-graph-div', page))
    drawn = len(re.findall(r'class="main-svg"', page))
    assert figures >= 1 and drawn >= figures, f"{figures} figures, {drawn} SVG layers drawn"
    html = (index.parent / "notebooks" / "01_parent_child_kernels.html").read_text()
    # a notebook's links name the site's pages (the next notebook's, where this site has it)
    assert 'href="../docs/glossary.html#parent"' in html
    assert 'id="parent"' in (index.parent / "docs" / "glossary.html").read_text()
    following = "02_redundancy.html" if any(p.name.startswith("02") for p in notebooks) else (
        f"{repository_url()}/blob/main/notebooks/02_redundancy.ipynb")
    assert f'href="{following}"' in html
    loads = re.findall(r'<(?:script|link)[^>]+(?:src|href)="(https?://[^"]+)"', html)
    # nothing loads from the network but Material's search shim for file:// pages
    assert set(loads) <= {"https://unpkg.com/iframe-worker/shim"}, loads
    api = (index.parent / "api" / "nn.html").read_text()
    assert "ParentKernel" in api and "ChildConv2d" in api  # the reference, from docstrings
    assert ":class:" not in api  # Sphinx roles became code (tools/griffe_roles.py)
