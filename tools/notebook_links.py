"""Derive every notebook's Colab badge and its set-up cell from pyproject.toml.

The public URL lives in one place, ``[project.urls] Repository`` in pyproject.toml, and the
release in ``[project] version``; a fork changes those and runs
``python tools/notebook_links.py``. Every notebook's first code cell is exactly
:func:`setup_cell`: in Colab, a visible ``%pip install`` of the extras the notebooks use at the
release tag, with the time it takes, and Colab's widget manager enabled for ipywidgets 8;
elsewhere nothing. With ``--check`` nothing is written and the exit status says whether any
notebook is out of date (tests run this).
"""

from __future__ import annotations

import json
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BADGE = re.compile(r"https://colab\.research\.google\.com/github/[^)\s\"']+")
# The extras a notebook needs in Colab (not `lab`: Colab brings its own Jupyter).
COLAB_EXTRAS = "viz,analysis,export,dense,peft"


def _project() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]


def repository_url() -> str:
    url = _project()["urls"]["Repository"].rstrip("/")
    if not url.startswith("https://github.com/"):
        raise ValueError(f"Repository URL must be a https://github.com/ address, got {url!r}")
    return url


def expected_links(notebook: Path, url: str = "") -> tuple[str, str]:
    """(Colab badge target, pip requirement) for ``notebook``."""
    url = url or repository_url()
    slug = url.removeprefix("https://github.com/")
    badge = f"https://colab.research.google.com/github/{slug}/blob/main/notebooks/{notebook.name}"
    return badge, f"kdna[{COLAB_EXTRAS}] @ git+{url}"


def setup_cell(url: str = "", version: str = "") -> str:
    """The first code cell of every notebook (see the module docstring)."""
    _, install = expected_links(Path("any.ipynb"), url)
    tag = f"v{version or _project()['version']}"
    return (
        f"# Set-up. In Colab this installs kdna {tag} with the extras the notebooks use (about\n"
        "# one to two minutes on a fresh runtime; pip's output stays visible) and enables the\n"
        "# widget manager that ipywidgets 8 needs. Elsewhere it does nothing: `make lab` (or\n"
        "# `pip install -e '.[lab]'`) has installed everything already.\n"
        "import sys\n"
        "\n"
        'if "google.colab" in sys.modules:\n'
        f'    %pip install "{install}@{tag}"\n'
        "    from google.colab import output\n"
        "\n"
        "    output.enable_custom_widget_manager()"
    )


def sync(notebook: Path, write: bool) -> bool:
    """Rewrite the badge and the set-up cell of ``notebook``; True when something was (or
    would be) changed."""
    text = notebook.read_text()
    badge, _ = expected_links(notebook)
    data = json.loads(BADGE.sub(badge, text))
    code = [c for c in data["cells"] if c["cell_type"] == "code"]
    if code:
        code[0]["source"] = setup_cell().splitlines(True)
    new = json.dumps(data, indent=1, ensure_ascii=False) + "\n"
    if write and new != text:
        notebook.write_text(new)
    return new != text


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = [p for p in sorted((ROOT / "notebooks").glob("*.ipynb")) if sync(p, not check)]
    for path in stale:
        print(f"{path.relative_to(ROOT)}: {'out of date' if check else 'updated'}")
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
