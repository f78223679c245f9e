"""The results of a fine-tuning comparison: runs, the learning rate each method gets, tables.

One :class:`RunResult` per (method, learning rate, seed). :func:`choose_lr` picks a method's
learning rate from its validation accuracies alone (seed :data:`SELECTION_SEED`, the highest,
the smaller rate on a tie); :func:`summarise` then reports the *test* accuracies of every seed
at that rate, their mean and sample standard deviation. :func:`comparison_table`,
:func:`csv_rows` and :func:`read_csv` write and read them. Accuracies are fractions in [0, 1];
tables print percentages.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kdna._tables import markdown_table

__all__ = ["SELECTION_SEED", "MethodSummary", "RunResult", "choose_lr", "comparison_table",
           "csv_rows", "lr_cell", "read_csv", "summarise", "test_cell"]

SELECTION_SEED = 0  # the seed whose validation accuracies choose the learning rate


@dataclass
class RunResult:
    """One training run of one method at one learning rate and seed."""

    method: str
    lr: float
    seed: int
    val_top1: float  # on the validation split (chooses the learning rate)
    test_top1: float | None  # on the test split (reported); None where not evaluated
    test_loss: float | None
    trainable: int  # parameters that trained
    total: int  # parameters of the trained network
    steps: int
    seconds_per_step: float  # the training loop's wall time per step (data loading included)
    task_bytes: int  # bytes of what the task stores beside the pretrained network

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> RunResult:
        return cls(**{k: row[k] for k in cls.__dataclass_fields__})


@dataclass
class MethodSummary:
    """One method over the protocol: its learning rate and its test accuracy over seeds."""

    method: str
    label: str
    trains: str
    lr: float | None = None  # chosen on validation
    val_by_lr: dict[float, float] = field(default_factory=dict)  # selection seed's val top-1
    test: list[float] = field(default_factory=list)  # test top-1 per seed, at lr
    trainable: int = 0
    total: int = 0
    task_bytes: int = 0
    seconds_per_step: float = math.nan  # median over its runs
    steps: int = 0
    error: str | None = None  # why it has no result (a method that could not be prepared)
    same_as: str | None = None  # trains exactly what this other method trains: not run again
    note: str = ""
    throughput: float | None = None  # deployed inference throughput / the plain network's
    # training step time relative to LoRA's, from the fine-tuning cost benchmark
    # (benchmarks/finetune_speed.py: interleaved rounds in one process), where it was measured
    step_vs_lora: float | None = None

    @property
    def mean(self) -> float:
        return statistics.fmean(self.test) if self.test else math.nan

    @property
    def std(self) -> float:
        """Sample standard deviation over seeds (0 for a single seed)."""
        return statistics.stdev(self.test) if len(self.test) > 1 else 0.0


def choose_lr(runs: Iterable[RunResult]) -> float:
    """The learning rate whose run with :data:`SELECTION_SEED` has the highest *validation*
    accuracy (the smaller rate on a tie). Test accuracies are never read."""
    candidates = [r for r in runs if r.seed == SELECTION_SEED]
    if not candidates:
        raise ValueError(f"no run with the selection seed {SELECTION_SEED} to choose a "
                         f"learning rate from")
    return max(candidates, key=lambda r: (r.val_top1, -r.lr)).lr


def summarise(method: str, label: str, trains: str, runs: Sequence[RunResult]) -> MethodSummary:
    """``method``'s :class:`MethodSummary` from its runs: the learning rate by
    :func:`choose_lr`, then the test accuracy of every seed at that rate."""
    lr = choose_lr(runs)
    chosen = sorted((r for r in runs if r.lr == lr), key=lambda r: r.seed)
    missing = [r.seed for r in chosen if r.test_top1 is None]
    if missing:
        raise ValueError(f"{method}: the runs at the chosen learning rate {lr:g} with seeds "
                         f"{missing} were not evaluated on the test split")
    first = chosen[0]
    return MethodSummary(
        method, label, trains, lr=lr,
        val_by_lr={r.lr: r.val_top1 for r in sorted(runs, key=lambda r: r.lr)
                   if r.seed == SELECTION_SEED},
        test=[r.test_top1 for r in chosen], trainable=first.trainable, total=first.total,
        task_bytes=first.task_bytes, steps=first.steps,
        seconds_per_step=statistics.median(r.seconds_per_step for r in runs))


def _size(n: int) -> str:
    return f"{n / 2**20:.2f} MB" if n >= 2**20 else f"{n / 2**10:.0f} KB"


def _row(s: MethodSummary, lrs: Sequence[float], by_label: dict[str, str], costs: bool
         ) -> list[str]:
    """A method's cells; one not run (a duplicate, a failure) says why and leaves the rest
    empty."""
    if s.same_as or s.error:
        why = (f"trains exactly what {by_label[s.same_as]} trains on this network: not run "
               f"again" if s.same_as else f"failed: {s.error}")
        return [s.label, s.trains, why, "", "", "", ""]
    speed = [] if s.throughput is None else [f"{s.throughput:.2f}x"]
    return [s.label, s.trains, lr_cell(s, lrs), test_cell(s), f"{s.trainable:,}",
            _size(s.task_bytes), _step_cell(s, costs), *speed]


def lr_cell(s: MethodSummary, lrs: Sequence[float]) -> str:
    """``"0.003 (42.0 / **87.5** / ...)"``: the chosen rate, then validation top-1 (%) at each
    rate of the grid ``lrs``, the chosen one in bold."""
    grid = " / ".join(f"**{100 * s.val_by_lr[lr]:.1f}**" if lr == s.lr else
                      f"{100 * s.val_by_lr[lr]:.1f}" for lr in lrs if lr in s.val_by_lr)
    return f"{s.lr:g} ({grid})"


def test_cell(s: MethodSummary) -> str:
    """``"**88.5 ± 1.4** (3)"``: test top-1 (%) as mean ± sample sd, and the number of seeds."""
    return f"**{100 * s.mean:.1f} ± {100 * s.std:.1f}** ({len(s.test)})"


def _step_cell(s: MethodSummary, costs: bool) -> str:
    if not costs:
        return f"{s.seconds_per_step:.3f}"
    return "not measured" if s.step_vs_lora is None else f"{s.step_vs_lora:.2f}x"


def comparison_table(summaries: Sequence[MethodSummary], lrs: Sequence[float]) -> str:
    """The comparison as a Markdown table: per method what trains, the learning rate chosen
    (validation top-1 at each rate of the grid, the chosen one in bold), test top-1 as mean
    ± standard deviation over seeds, trainable parameters, task file, the training step's cost
    (its time relative to LoRA's from the fine-tuning cost benchmark where the summaries carry
    it, else the runs' own seconds per step) and, where measured, deployed throughput relative
    to the plain network."""
    speed = any(s.throughput is not None for s in summaries)
    costs = any(s.step_vs_lora is not None for s in summaries)
    grid = " / ".join(f"{lr:g}" for lr in lrs)
    header = ["method", "trains", f"lr chosen (val top-1 % at {grid})", "test top-1 % (seeds)",
              "trainable", "task file", "step time vs LoRA" if costs else "s / step",
              *(["deployed speed"] if speed else [])]
    by_label = {s.method: s.label for s in summaries}
    return markdown_table(header, [_row(s, lrs, by_label, costs) for s in summaries],
                          "lllrrrr" + ("r" if speed else ""))


def csv_rows(summaries: Sequence[MethodSummary], **extra: Any) -> list[dict[str, Any]]:
    """One flat row per method (accuracies as fractions), with ``extra`` columns first."""
    rows = []
    for s in summaries:
        row = dict(extra) | {k: v for k, v in asdict(s).items() if k not in ("test", "val_by_lr")}
        row |= {"test_top1_mean": s.mean, "test_top1_std": s.std, "seeds": len(s.test),
                "test_top1_per_seed": ";".join(f"{t:.4f}" for t in s.test),
                "val_top1_by_lr": ";".join(f"{lr:g}:{v:.4f}" for lr, v in s.val_by_lr.items())}
        rows.append(row)
    return rows


def _number(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return None if text == "" else text


def read_csv(path: str | Path) -> list[dict[str, Any]]:
    """Rows written from :func:`csv_rows`, numbers parsed, ``test_top1_per_seed`` as a list
    of floats and ``val_top1_by_lr`` as a ``{lr: top1}`` dict."""
    with open(path, newline="") as f:
        rows = [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]
    for row in rows:
        seeds = str(row.get("test_top1_per_seed") or "")
        row["test_top1_per_seed"] = [float(t) for t in seeds.split(";") if t]
        grid = str(row.get("val_top1_by_lr") or "")
        row["val_top1_by_lr"] = {float(a): float(b) for a, b in
                                 (item.split(":") for item in grid.split(";") if item)}
    return rows
