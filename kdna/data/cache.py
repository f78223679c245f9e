"""The one folder kdna caches in: downloads, and results the notebooks reload.

:func:`cache_root` is ``$KDNA_CACHE`` when that is set, else ``kdna`` in the per-user cache
folder (``$XDG_CACHE_HOME/kdna``, by default ``~/.cache/kdna``). It never depends on the
working directory: a download started from ``notebooks/`` or in Colab's ``/content`` lands in
the same place, and ``make test`` points ``KDNA_CACHE`` at a fresh folder so that nothing
passes on results cached by an earlier run. Every ``root=None`` default of :mod:`kdna.data`
(``load_data``, ``penn_fudan``) means this folder.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ENV", "cache_root", "resolve_root"]

ENV = "KDNA_CACHE"  # the environment variable that moves the cache


def cache_root(*parts: str) -> Path:
    """The absolute cache folder (module docstring), or a path inside it (``parts``); nothing
    is created.

    A relative ``$KDNA_CACHE`` is made absolute once, here; a relative ``$XDG_CACHE_HOME`` is
    ignored, as the XDG base-directory specification asks.
    """
    chosen = os.environ.get(ENV, "").strip()
    if chosen:
        root = Path(chosen).expanduser().absolute()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
        base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
        root = base / "kdna"
    return root.joinpath(*parts)


def resolve_root(root: str | Path | None) -> Path:
    """``root`` as a path, or :func:`cache_root` when it is ``None`` (the ``root=`` argument of
    the data sets that download)."""
    return cache_root() if root is None else Path(root).expanduser()
