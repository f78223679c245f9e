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

__all__ = ["FORMAT", "load_checkpoint", "rng_state", "save_checkpoint", "set_rng_state"]

FORMAT = "kdna-checkpoint"


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> Path:
    """Write ``payload`` (plus the format marker) to ``path`` atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, **payload}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`, on the CPU, tensors only."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(
            f"refusing to load {str(path)!r}: it holds objects other than tensors and plain "
            f"containers (possibly pickled code), which weights_only loading forbids ({exc})"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as exc:
        raise ValueError(f"{str(path)!r} is not a readable checkpoint (truncated or corrupt?): "
                         f"{exc}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{str(path)!r} is not a kdna checkpoint (expected a dict with "
                         f"'format': {FORMAT!r})")
    return payload


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
