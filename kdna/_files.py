"""Files that are never half-written: write to a temporary file beside the target, then rename."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

__all__ = ["read_record", "write_atomically"]


def _umask() -> int:
    """The process's umask, read without setting it (``os.umask`` would change it for every
    thread for a moment); 0o022 where the system does not say."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


def write_atomically(path: Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(file)`` on a temporary file in ``path``'s folder, flush it to disk and
    rename it to ``path``: a crash leaves the previous file intact, never a partial one. The
    file gets the permissions a plain ``open`` would give it (the temporary file's are
    private to its owner)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_record(path: Path, kind: str, version: int, written_by: str) -> dict[str, Any]:
    """The JSON object in ``path`` whose ``"format"`` is ``kind`` and ``"version"`` is
    ``version``: a ``FileNotFoundError`` that says what writes such a file when it is
    missing, a ``ValueError`` naming the file when it is not that JSON."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {path.name} in {path.parent}: expected a folder written "
                                f"by {written_by}")
    try:
        record = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc})") from exc
    if not isinstance(record, dict) or record.get("format") != kind:
        raise ValueError(f"{path} is not a {kind} file (format {kind!r} expected)")
    if record.get("version") != version:
        raise ValueError(f"{path} has {kind} format version {record.get('version')!r}; this "
                         f"kdna reads version {version}")
    return record
