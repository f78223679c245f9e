"""Files that are never half-written (a temporary file beside the target, then a rename), and
the versioned JSON records kdna writes beside its tensors (adapter files, task files), read
back with one set of checks."""

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


def read_record(path: Path, fmt: str, version: int, kind: str, *, older: str = ""
                ) -> dict[str, Any]:
    """The JSON object in ``path``: a ``ValueError`` naming the file unless it is valid JSON
    whose ``format`` is ``fmt`` (a kdna ``kind`` file) at ``version``; ``older`` says what to
    do with a file of another version."""
    try:
        record = json.loads(Path(path).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc})") from exc
    if not isinstance(record, dict) or record.get("format") != fmt:
        raise ValueError(f"{path} is not a kdna {kind} file (format {fmt!r} expected)")
    if record.get("version") != version:
        raise ValueError(f"{path} has {kind} format version {record.get('version')!r}; this kdna "
                         f"reads version {version}{older}")
    return record
