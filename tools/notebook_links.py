"""Derive every notebook's Colab badge and Colab install line from pyproject's Repository URL.

The public URL lives in one place, ``[project.urls] Repository`` in pyproject.toml; a fork
changes that line and runs ``python tools/notebook_links.py``. With ``--check`` nothing is
written and the exit status says whether any notebook is out of date (tests run this).
"""

from __future__ import annotations

import json
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BADGE = re.compile(r"https://colab\.research\.google\.com/github/[^)\s\"']+")
INSTALL = re.compile(r"kdna(\[[a-z,]*\])? @ git\+https://github\.com/[^\s\"'\\]+")
# The extras a notebook needs in Colab (not `lab`: Colab brings its own Jupyter).
COLAB_EXTRAS = "viz,analysis,export,dense,peft"


def repository_url() -> str:
    with open(ROOT / "pyproject.toml", "rb") as f:
        url = tomllib.load(f)["project"]["urls"]["Repository"].rstrip("/")
    if not url.startswith("https://github.com/"):
        raise ValueError(f"Repository URL must be a https://github.com/ address, got {url!r}")
    return url


def expected_links(notebook: Path, url: str = "") -> tuple[str, str]:
    """(Colab badge target, pip requirement) for ``notebook``."""
    url = url or repository_url()
    slug = url.removeprefix("https://github.com/")
    badge = f"https://colab.research.google.com/github/{slug}/blob/main/notebooks/{notebook.name}"
    return badge, f"kdna[{COLAB_EXTRAS}] @ git+{url}"


def sync(notebook: Path, write: bool) -> bool:
    """Rewrite the links in ``notebook``; True when something was (or would be) changed."""
    text = notebook.read_text()
    badge, install = expected_links(notebook)
    new = INSTALL.sub(install, BADGE.sub(badge, text))
    if write and new != text:
        json.loads(new)  # still a valid notebook
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
