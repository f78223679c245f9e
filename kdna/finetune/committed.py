"""What the committed fine-tuning benchmark chose, as the defaults of :func:`kdna.finetune`.

``benchmarks/finetune.py`` runs the protocol (:mod:`kdna.finetune.protocol`) for every method
on the offline data sets and commits its table under ``benchmarks/results/``; it also writes
``committed.json`` beside this module (:func:`choices_from_rows`, checked against the table by
the tests), because the results folder does not ship with the package. From it:

* :func:`default_method`: the KernelDNA in-place method with the best validation top-1 at its
  chosen rate, averaged over the committed data sets (chosen on validation, as the protocol
  chooses everything: the test split only reports);
* :func:`default_lr`: the learning rate the protocol chose for a method on validation: on a
  committed data set, the one chosen there; on any other, the rate of the grid with the best
  validation top-1 averaged over the committed data sets (the smaller rate on a tie).
"""

from __future__ import annotations

import functools
import json
import math
import statistics
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["COMMITTED_FILE", "choices_from_rows", "committed", "default_lr", "default_method"]

COMMITTED_FILE = Path(__file__).with_name("committed.json")


def choices_from_rows(rows: Iterable[Mapping[str, Any]], *, source: str,
                      in_place: Iterable[str]) -> dict[str, Any]:
    """The committed choices from the benchmark's CSV rows (:func:`kdna.finetune.results.
    read_csv`): per method and data set the chosen rate, the validation top-1 at each rate
    of the grid (selection seed) and the test top-1 over seeds. ``in_place`` names the
    KernelDNA in-place methods :func:`default_method` chooses from."""
    rows = list(rows)
    if not rows:
        raise ValueError(f"no rows in {source}: nothing to choose defaults from")
    methods: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = {"same_as": row.get("same_as") or None}
        if row.get("lr") is not None:
            entry |= {"lr": float(row["lr"]),
                      "val_by_lr": {f"{lr:g}": v for lr, v in row["val_top1_by_lr"].items()},
                      "test_mean": float(row["test_top1_mean"]),
                      "test_std": float(row["test_top1_std"]), "seeds": int(row["seeds"])}
        methods.setdefault(row["method"], {})[row["data"]] = entry
    first = rows[0]
    return {"source": source, "device": first["device"],
            "protocol": {"image_size": first["image_size"], "steps": first["steps"],
                         "batch_size": first["batch_size"]},
            "in_place": sorted(set(in_place) & set(methods)), "methods": methods}


@functools.cache
def committed() -> dict[str, Any]:
    """The committed choices (``committed.json``)."""
    return json.loads(COMMITTED_FILE.read_text())


def _rows(method: str) -> dict[str, dict[str, Any]]:
    """``method``'s committed rows by data set, following ``same_as`` (BitFit on a network
    without convolution biases trains what norms + head trains)."""
    methods = committed()["methods"]
    if method not in methods:
        raise ValueError(f"the committed benchmark has no row for method {method!r} (it has "
                         f"{', '.join(methods)}); pass a learning rate, or lr='search'")
    rows = methods[method]
    return {data: methods[row["same_as"]][data] if row.get("same_as") else row
            for data, row in rows.items()}


def default_method(*, gated: bool = False) -> str:
    """The KernelDNA in-place method with the best committed validation top-1 at its chosen
    rate (the selection seed's), averaged over the committed data sets: a default is a choice,
    and the protocol makes choices on validation, never on test. With ``gated``, the best of
    those whose children have input gates (the ones with per-input routing to look at)."""
    def mean_val(method: str) -> float:
        vals = [row["val_by_lr"][f"{row['lr']:g}"] for row in _rows(method).values()
                if "lr" in row]
        return statistics.fmean(vals) if vals else -math.inf

    from kdna.finetune.methods import get_method  # the registry says which methods are gated

    methods = [m for m in committed()["in_place"] if not gated or get_method(m).gated]
    if not methods:
        raise ValueError(f"no gated method among the committed in-place methods "
                         f"{committed()['in_place']}")
    return max(methods, key=mean_val)


def default_lr(method: str, data: str | None = None) -> float:
    """The learning rate the committed protocol chose for ``method`` on ``data`` (a committed
    data set's name), or, for other data, the rate with the best validation top-1 averaged
    over the committed data sets (the smaller rate on a tie)."""
    rows = {d: r for d, r in _rows(method).items() if "lr" in r}
    if not rows:
        raise ValueError(f"the committed benchmark has no learning rate for {method!r}; pass "
                         f"one, or lr='search'")
    if data in rows:
        return rows[data]["lr"]
    grids = [row["val_by_lr"] for row in rows.values()]
    shared = set.intersection(*(set(g) for g in grids))
    return min((float(lr) for lr in shared),
               key=lambda lr: (-statistics.fmean(g[f"{lr:g}"] for g in grids), lr))
