"""The committed benchmark tables, wherever kdna runs: a clone, a pip install, or Colab.

The notebooks read tables that the benchmark scripts committed under ``benchmarks/results/``.
A clone has them beside the package; an installed kdna (Colab's ``pip install``) does not, so
:func:`benchmark_results` looks, in order, in the repository checkout the package was imported
from, in the cache root (``<cache root>/results``, where an earlier download went), and at the
repository named in the package's metadata (``[project.urls] Repository`` in pyproject.toml,
the one place the public URL lives), downloading the file into the cache. Offline and
without a checkout it returns ``None``: the caller says in one sentence what it skips.
"""

from __future__ import annotations

import importlib.metadata
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from kdna._files import write_atomically
from kdna.data.cache import cache_root
from kdna.data.online import require_online

__all__ = ["RESULTS", "benchmark_results", "repository_url"]

RESULTS = "benchmarks/results"  # where the committed tables live in the repository


def repository_url() -> str | None:
    """The public repository's URL from the installed package's metadata (``None`` if the
    metadata names none)."""
    try:
        urls = importlib.metadata.metadata("kdna").get_all("Project-URL") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    found = {label.strip().lower(): url.strip() for label, _, url in
             (entry.partition(",") for entry in urls)}
    return found.get("repository")


def _raw_url(repository: str, name: str, branch: str) -> str | None:
    """The raw-file URL of ``RESULTS/name`` on GitHub (``None`` for another host)."""
    parts = urlsplit(repository)
    if parts.hostname != "github.com":
        return None
    slug = parts.path.strip("/").removesuffix(".git")
    return f"https://raw.githubusercontent.com/{slug}/{branch}/{RESULTS}/{name}"


def benchmark_results(name: str, *, download: bool = True, branch: str = "main",
                      timeout: float = 10.0) -> Path | None:
    """The committed results file ``name`` (e.g. ``"finetune-amd-epyc-2-threads.csv"``): from
    the checkout, the cache, or downloaded from the repository (module docstring); ``None``
    when none of them has it."""
    if "/" in name or "\\" in name or not name:
        raise ValueError(f"name must be a file name in {RESULTS}/, got {name!r}")
    checkout = Path(__file__).resolve().parents[2] / RESULTS / name
    if checkout.is_file():
        return checkout
    cached = cache_root("results") / name
    if cached.is_file():
        return cached
    repository = repository_url()
    url = _raw_url(repository, name, branch) if repository and download else None
    if url is None:
        return None
    try:
        require_online(url, what=f"the committed table {name}", offline="a clone of the "
                       "repository", timeout=3.0)
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = response.read()
    except OSError:
        return None
    cached.parent.mkdir(parents=True, exist_ok=True)
    return write_atomically(cached, lambda file: file.write(data))
