"""Checkpoints that lose nothing: written atomically, loaded safely, with every RNG state.

* :func:`save_checkpoint` writes to a temporary file beside the target and renames it, so a
  crash mid-write leaves the previous checkpoint intact, never a half-written one.
* :func:`load_checkpoint` loads with ``weights_only=True``: tensors and plain containers only.
  A file carrying pickled code is refused with a clear error, as is a truncated file or one
  that is not a kdna checkpoint.
* :func:`rng_state` / :func:`set_rng_state` capture and restore Python's, NumPy's and
  torch's (CPU and CUDA) generators as tensors and plain values, so a resumed run draws the
  same random numbers as an uninterrupted one.
"""

from __future__ import annotations

import os
import pickle
import random
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdna._files import write_atomically

__all__ = ["FORMAT", "check_writable", "load_checkpoint", "rng_state", "save_checkpoint",
           "set_rng_state"]

FORMAT = "kdna-checkpoint"


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> Path:
    """Write ``payload`` (plus the format marker) to ``path`` atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomically(path, lambda file: torch.save({"format": FORMAT, **payload}, file))


def _what_it_is(path: Path) -> str:
    """A few words on what a file that is not a checkpoint holds, from its first bytes."""
    size = path.stat().st_size
    if size == 0:
        return "an empty file (0 bytes)"
    with path.open("rb") as f:
        head = f.read(4096)
    if head.startswith(b"PK"):
        if not zipfile.is_zipfile(path):
            return f"a truncated or corrupt zip/torch file ({size} bytes)"
        with zipfile.ZipFile(path) as z:
            if not any(n.endswith("data.pkl") for n in z.namelist()):
                return f"a zip archive that is not a torch file ({size} bytes)"
        return f"a corrupt torch file ({size} bytes)"
    if head.startswith(b"\x80"):
        return f"a raw pickle, not a torch zip file ({size} bytes)"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return f"binary data that torch cannot read ({size} bytes)"
    return f"a text file ({size} bytes)"


def _unreadable(path: Path) -> ValueError:
    return ValueError(f"{str(path)!r} is not a readable checkpoint: it is {_what_it_is(path)}, "
                      f"not a kdna checkpoint")


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`, on the CPU, tensors only.

    Anything else (a missing path, a folder, an empty, truncated or corrupt file, text, a zip
    that is not torch, pickled code, a torch file that is not a kdna checkpoint) raises
    ``FileNotFoundError``, ``IsADirectoryError`` or a ``ValueError`` naming the file and what it
    is. Loading never writes anything.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"checkpoint {str(path)!r} is a folder; give a file such as "
                                f"{str(path / 'last.pt')!r}")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        with path.open("rb") as f:
            pickled = f.read(1) == b"\x80" or zipfile.is_zipfile(path)
        if not pickled:  # torch reads what is not a zip as a pickle: text, random bytes
            raise _unreadable(path) from None
        first = str(exc).strip().splitlines()[-1][:200]
        raise ValueError(
            f"refusing to load {str(path)!r}: it holds objects other than tensors and plain "
            f"containers (possibly pickled code), which weights_only loading forbids ({first})"
        ) from None
    except PermissionError as exc:
        raise PermissionError(f"checkpoint {str(path)!r} cannot be read: {exc.strerror}") from None
    except Exception:  # torch's errors on foreign bytes are of every kind
        raise _unreadable(path) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        what = (f"a dict with keys {sorted(map(str, payload))[:8]}" if isinstance(payload, dict)
                else f"a {type(payload).__name__}")
        raise ValueError(f"{str(path)!r} is not a kdna checkpoint: it is a torch file holding "
                         f"{what}, not a dict with 'format': {FORMAT!r}")
    return payload


def check_writable(folder: str | Path) -> Path:
    """Create ``folder`` if needed and prove that a file can be written there (a small test
    file, written, flushed to disk and removed), so an unwritable, missing or full checkpoint folder
    is found before training starts. Raises ``NotADirectoryError``, ``PermissionError`` or
    ``OSError`` naming the folder."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"checkpoint folder {str(folder)!r} is an existing file; "
                                 f"give a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, trial = tempfile.mkstemp(prefix=".kdna-write-test.", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(b"\0" * 65536)
                f.flush()
                os.fsync(f.fileno())
        finally:
            Path(trial).unlink(missing_ok=True)
    except OSError as exc:
        kind = type(exc) if type(exc) in (PermissionError, NotADirectoryError) else OSError
        raise kind(f"checkpoint folder {str(folder)!r} is not writable: "
                   f"{exc.strerror or exc}") from None
    return folder


def rng_state() -> dict[str, Any]:
    """Every random generator's state, as tensors and plain Python values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
                  "has_gauss": has_gauss, "gauss": gauss},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
