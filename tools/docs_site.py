"""Build the site to read without running anything: ``make docs`` writes ``build/site/``.

The site (MkDocs with Material, ``mkdocs.yml``) holds the README as its home page, every
notebook *executed, with its figures*, the committed benchmark tables, the project's docs and an
API reference generated from the docstrings (mkdocstrings). It builds offline and opens from
``file://`` as well as from a server.

Executed notebooks are never executed twice for nothing: ``make test`` runs every notebook under
nbval and ``tests/conftest.py`` writes what nbval saw to ``build/executed/`` (see
:func:`with_outputs`), each stamped with the hash of its source. :func:`executed_notebooks`
reuses a copy whose stamp matches its source and executes the others (nbclient), so a fresh
clone's ``make docs`` executes them all and one after ``make test`` executes none.

Plotly figures are stored in notebooks as their JSON mimetype, which only a live Jupyter renders;
:func:`static_outputs` turns each into a ``<div>`` drawn by one local copy of plotly.js, and an
ipywidgets view (which needs a kernel) into a line saying so.

Usage: python tools/docs_site.py [--site DIR] [--executed DIR]
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import re
import shutil
import sys
import tomllib
from collections.abc import Iterable, Sequence
from pathlib import Path

import nbformat

from kdna._files import write_atomically

ROOT = Path(__file__).resolve().parents[1]
EXECUTED = ROOT / "build" / "executed"
SOURCES = ROOT / "build" / "site-src"
SITE = ROOT / "build" / "site"
STAMP = "kdna_source_sha256"  # notebook metadata: the hash of the source it was executed from
PLOTLY = "application/vnd.plotly.v1+json"
WIDGET = "application/vnd.jupyter.widget-view+json"
API = {  # page -> (title, modules documented on it)
    "kdna": ("kdna: the names most people need", ["kdna"]),
    "nn": ("kdna.nn: the method", ["kdna.nn", "kdna.nn.dynamic"]),
    "conversion": ("kdna.conversion: pretrained networks", ["kdna.conversion"]),
    "models": ("kdna.models", ["kdna.models"]),
    "train": ("kdna.train", ["kdna.train"]),
    "data": ("kdna.data", ["kdna.data"]),
    "analysis": ("kdna.analysis", ["kdna.analysis"]),
    "viz": ("kdna.viz", ["kdna.viz", "kdna.viz.widgets"]),
    "deploy": ("kdna.deploy and kdna.bench", ["kdna.deploy", "kdna.bench"]),
    "dense": ("kdna.dense", ["kdna.dense"]),
}

__all__ = ["build", "executed_notebooks", "mathml", "nbval_outputs", "save_notebook", "source_hash",
           "static_outputs", "with_outputs", "write_sources"]


def source_hash(path: Path) -> str:
    """The hash an executed copy of the notebook at ``path`` is stamped with."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def with_outputs(source: Path, outputs: Sequence[list]) -> nbformat.NotebookNode:
    """The notebook at ``source`` with ``outputs[i]`` as the outputs of its i-th code cell
    (what nbval collected while testing it), numbered and stamped with the source's hash."""
    nb = nbformat.read(source, as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    if len(code) != len(outputs):
        raise ValueError(f"{source.name} has {len(code)} code cells, got outputs for "
                         f"{len(outputs)}")
    for count, (cell, outs) in enumerate(zip(code, outputs, strict=True), start=1):
        cell.outputs = [nbformat.from_dict({**out, **({"execution_count": count}
                                                      if out["output_type"] == "execute_result"
                                                      else {})}) for out in outs]
        cell.execution_count = count
    nb.metadata[STAMP] = source_hash(source)
    return nb


def nbval_outputs(items: Iterable) -> dict[Path, list[list]]:
    """The outputs nbval collected, per notebook, for every notebook of a pytest session whose
    code cells all ran and none of which raised (the others are left out)."""
    cells: dict[Path, list] = {}
    for item in items:
        if hasattr(item, "test_outputs") and hasattr(item, "cell_num"):
            cells.setdefault(Path(str(item.parent.fspath)), []).append(item.test_outputs)
    return {path: outputs for path, outputs in cells.items()
            if all(outs is not None and not any(o["output_type"] == "error" for o in outs)
                   for outs in outputs)}


def save_notebook(nb: nbformat.NotebookNode, path: Path) -> None:
    """Write ``nb`` to ``path`` through a temporary file: never a half-written notebook."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda file: file.write(nbformat.writes(nb).encode()))


def executed_notebooks(sources: Iterable[Path], executed: Path = EXECUTED, *,
                       timeout: int = 600) -> list[Path]:
    """An executed copy of every notebook in ``sources``: the one in ``executed`` where its
    stamp matches the source, otherwise one executed now (and written there)."""
    paths = []
    for source in sources:
        copy_path = executed / source.name
        if not (copy_path.exists() and nbformat.read(copy_path, as_version=4).metadata.get(
                STAMP) == source_hash(source)):
            from nbclient import NotebookClient

            print(f"executing {source.name} (no up-to-date copy in {executed})", flush=True)
            nb = nbformat.read(source, as_version=4)
            NotebookClient(nb, timeout=timeout, kernel_name="python3",
                           resources={"metadata": {"path": str(source.parent)}}).execute()
            nb.metadata[STAMP] = source_hash(source)
            save_notebook(nb, copy_path)
        paths.append(copy_path)
    return paths


def static_outputs(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of ``nb`` whose plotly figures are HTML drawn by ``window.Plotly`` and whose
    widget views say that they need a running kernel."""
    import plotly.io as pio

    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if PLOTLY in data:
                fig = pio.from_json(json.dumps(data[PLOTLY]), skip_invalid=True)
                out.data = {"text/html": pio.to_html(fig, include_plotlyjs=False,
                                                     full_html=False, default_width="100%")}
            elif WIDGET in data:
                out.data = {"text/html": "<p><em>An interactive widget: run this notebook "
                                         "in Jupyter or Colab to use it.</em></p>"}
    return nb


def _repository() -> str:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["urls"]["Repository"].rstrip("/")


def _page(path: str) -> str:
    """Where the repository file at ``path`` lives in the site's sources."""
    return "index.md" if path == "README.md" else path


def _relink(markdown: str, here: str, pages: set[str], *, html: bool = False) -> str:
    """Links relative to the repository file at ``here``: kept where the site has the page,
    pointed at the repository otherwise. ``html``: a page's link names its ``.html`` file, for
    notebooks, whose links mkdocs-jupyter leaves as written (mkdocs rewrites a Markdown
    page's own ``.md`` links)."""
    def fix(match: re.Match) -> str:
        target, _, anchor = match[2].partition("#")
        if re.match(r"[a-z]+:", target) or not target:
            return match[0]
        path = os.path.normpath(os.path.join(os.path.dirname(here), target))
        if path in pages:
            page = _page(path)
            if html and page.endswith((".md", ".ipynb")):
                page = os.path.splitext(page)[0] + ".html"
            link = os.path.relpath(page, os.path.dirname(_page(here)) or ".")
        else:
            link = f"{_repository()}/blob/main/{path}"
        return f"{match[1]}({link}{'#' + anchor if anchor else ''})"
    return re.sub(r"(\]\s*)\(([^)\s]+)\)", fix, markdown)


def mathml(markdown: str) -> str:
    """``$$ ... $$`` display maths as MathML, which browsers draw natively (no MathJax, no
    CDN)."""
    from latex2mathml.converter import convert

    return re.sub(r"\$\$(.+?)\$\$", lambda m: "\n\n" + convert(m[1].strip(), display="block")
                  + "\n\n", markdown, flags=re.S)


def write_sources(notebooks: Sequence[Path], dest: Path = SOURCES) -> Path:
    """Lay out the site's sources in ``dest`` (emptied first) and return it."""
    import plotly

    shutil.rmtree(dest, ignore_errors=True)
    (dest / "notebooks").mkdir(parents=True)
    shutil.copytree(ROOT / "docs" / "figures", dest / "docs" / "figures")
    results = sorted((ROOT / "benchmarks" / "results").glob("*.md"))
    pages = {"README.md", "docs/architecture.md", "docs/errors.md", "docs/glossary.md",
             *(f"notebooks/{p.name}" for p in notebooks),
             *(f"benchmarks/results/{p.name}" for p in results),
             *(f"docs/figures/{p.name}" for p in (ROOT / "docs" / "figures").iterdir())}
    for page in sorted(p for p in pages if p.endswith(".md")):
        (dest / _page(page)).parent.mkdir(parents=True, exist_ok=True)
        (dest / _page(page)).write_text(_relink((ROOT / page).read_text(), page, pages))
    for path in notebooks:
        nb = static_outputs(nbformat.read(path, as_version=4))
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                cell.source = mathml(_relink(cell.source, f"notebooks/{path.name}", pages,
                                             html=True))
        nbformat.write(nb, dest / "notebooks" / path.name)
    for page, (title, modules) in API.items():
        (dest / "api").mkdir(exist_ok=True)
        (dest / "api" / f"{page}.md").write_text(
            f"# {title}\n\n" + "\n\n".join(f"::: {m}" for m in modules) + "\n")
    (dest / "assets").mkdir()
    shutil.copy(Path(plotly.__file__).parent / "package_data" / "plotly.min.js",
                dest / "assets" / "plotly.min.js")
    return dest


def build(notebooks: Sequence[Path], site: Path = SITE, sources: Path = SOURCES) -> Path:
    """Write the site for the executed ``notebooks`` into ``site`` and return its index."""
    from mkdocs.commands.build import build as mkdocs_build
    from mkdocs.config import load_config

    write_sources(notebooks, sources)
    config = load_config(str(ROOT / "mkdocs.yml"), docs_dir=str(sources), site_dir=str(site))
    config.plugins.on_startup(command="build", dirty=False)
    try:
        mkdocs_build(config)
    finally:
        config.plugins.on_shutdown()
    return site / "index.html"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--site", type=Path, default=SITE, help="where the site goes")
    parser.add_argument("--executed", type=Path, default=EXECUTED,
                        help="executed notebooks to reuse (and where new ones are written)")
    args = parser.parse_args(argv)
    notebooks = executed_notebooks(sorted((ROOT / "notebooks").glob("[0-9]*.ipynb")),
                                   args.executed)
    index = build(notebooks, args.site)
    print(f"site written: {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
