"""Keys of data sources for caches: what a cached result was computed on, not where it lay.

:func:`source_key` gives a data set's canonical name, or for a folder a short hash of its
files (relative path, size, modification time). A folder moved, renamed or copied with its
times kept (``cp -a``, ``shutil.copytree``) keeps its key, so a cache keyed by it is reused;
an image added, removed, renamed, rewritten or touched changes it, so nothing computed on the
old files is taken for the new ones.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from kdna.data.classification import resolve_source
from kdna.data.folders import LAYOUT

__all__ = ["folder_key", "source_key"]

KEY_CHARS = 16  # hex digits of sha256 kept: 64 bits, a collision is vanishingly unlikely


def folder_key(folder: str | Path) -> str:
    """``KEY_CHARS`` hex digits of the sha256 of every file under ``folder``: its path relative
    to ``folder``, its size and its ``mtime_ns``, sorted. Hidden files and folders
    (``.ipynb_checkpoints``, ``.DS_Store``) are left out, as :func:`kdna.data.load_data` leaves
    them; symbolic links are followed, as it follows them."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{str(folder)!r} is not a folder; expected {LAYOUT}")
    lines = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.startswith("."):
                continue
            path = Path(root, name)
            stat = path.stat()
            lines.append(f"{path.relative_to(folder).as_posix()}\t{stat.st_size}\t"
                         f"{stat.st_mtime_ns}")
    digest = hashlib.sha256("\n".join(sorted(lines)).encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:KEY_CHARS]


def source_key(source: str | Path) -> str:
    """A key for what :func:`kdna.data.load_data` reads from ``source``: the canonical name of
    a data set (``"dummy"`` is ``"synthetic"``), or :func:`folder_key` of a folder. Names and
    paths are told apart exactly as ``load_data`` tells them, with the same errors."""
    kind, name = resolve_source(source)
    return folder_key(name) if kind == "folder" else str(name)
