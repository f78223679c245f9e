"""A from-scratch comparison as a table, and the paper's claims judged from it.

One :class:`ScratchRow` per network: its :class:`kdna.finetune.results.MethodSummary` (rate
chosen on validation, test top-1 over seeds, parameters, seconds per step, throughput relative
to its plain reference) with its MACs and training wall time. :func:`markdown_table`,
:func:`csv_rows` and :func:`read_rows` write and read them; :func:`claims` judges the paper's
claims, each :class:`Verdict` one of :data:`VERDICTS`:

* **met**: KernelDNA's mean test top-1 is higher than the other network's by more than one
  spread;
* **not met**: it is lower by more than one spread;
* **within one spread**: ``|mean_KernelDNA - mean_other| <= max(sd_KernelDNA, sd_other)``,
  each ``sd`` the sample standard deviation of test top-1 over seeds: the seeds cannot tell
  them apart.

The claim against a dynamic convolution is "more accuracy per unit of throughput": where
KernelDNA's measured throughput is not higher than the other's it is **not met** (slower),
otherwise the verdict is the accuracy's, at the measured throughput ratio.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdna._tables import markdown_table as table
from kdna.finetune import results as finetune_results
from kdna.finetune.results import MethodSummary, lr_cell, test_cell

__all__ = ["CLAIMS", "VERDICTS", "ScratchRow", "Verdict", "accuracy_verdict", "claims",
           "csv_rows", "markdown_table", "read_rows", "spread"]

VERDICTS = ("met", "not met", "within one spread")
# other network -> the claim KernelDNA makes against it ("" : per unit of throughput)
CLAIMS = {
    "resnet18": "KernelDNA ResNet-18 beats plain ResNet-18",
    "resnet18_deep": "KernelDNA ResNet-18 beats the deeper plain control (blocks 2, 2, 3, 3)",
    "resnet18_narrow": "KernelDNA ResNet-18 beats the same-size control (narrowed ResNet-18)",
    "condconv8x": "KernelDNA ResNet-18 beats CondConv-8x per unit of throughput",
    "dyconv4x": "KernelDNA ResNet-18 beats DY-Conv-4x per unit of throughput",
    "odconv1x": "KernelDNA ResNet-18 beats ODConv-1x per unit of throughput",
    "odconv4x": "KernelDNA ResNet-18 beats ODConv-4x per unit of throughput",
    "mobilenet_v2_1d2": "KernelDNA MobileNetV2 0.5x beats plain MobileNetV2 0.5x",
}
DYNAMIC = ("condconv8x", "dyconv4x", "odconv1x", "odconv4x")


@dataclass
class ScratchRow:
    """One network of a comparison, as the table shows it."""

    summary: MethodSummary  # method: the network's name; trains: what it is
    macs: int | None = None  # multiply-accumulates per image
    train_seconds: float = 0.0  # training wall time of all its runs
    images_per_second: float | None = None  # measured inference throughput


@dataclass(frozen=True)
class Verdict:
    """One claim of the paper, judged from a table."""

    claim: str
    network: str  # KernelDNA's side
    other: str
    verdict: str  # one of VERDICTS
    difference: float  # mean test top-1 of KernelDNA minus the other's (fractions)
    spread: float  # max of the two sample standard deviations
    throughput: float | None  # KernelDNA's throughput / the other's (dynamic claims)
    text: str  # the verdict in a sentence, with the numbers


def spread(a: MethodSummary, b: MethodSummary) -> float:
    """The larger of the two sample standard deviations of test top-1 over seeds."""
    return max(a.std, b.std)


def accuracy_verdict(a: MethodSummary, b: MethodSummary) -> str:
    """``"met"`` where ``a``'s mean test top-1 exceeds ``b``'s by more than one
    :func:`spread`, ``"not met"`` where it falls short by more, else ``"within one spread"``."""
    difference, noise = a.mean - b.mean, spread(a, b)
    if abs(difference) <= noise + 1e-9:  # a tie at the boundary is not a difference
        return "within one spread"
    return "met" if difference > 0 else "not met"


def _verdict(claim: str, a: MethodSummary, b: MethodSummary, dynamic: bool) -> Verdict:
    difference, noise = a.mean - b.mean, spread(a, b)
    numbers = (f"{a.label} {100 * a.mean:.1f} ± {100 * a.std:.1f}% against {b.label} "
               f"{100 * b.mean:.1f} ± {100 * b.std:.1f}% ({100 * difference:+.1f} points, one "
               f"spread = {100 * noise:.1f})")
    ratio = None
    if dynamic:
        if a.throughput is None or b.throughput is None:
            raise ValueError(f"the claim against {b.method} needs both throughputs measured")
        ratio = a.throughput / b.throughput
        numbers += f", at {ratio:.2f}x its throughput"
        if ratio <= 1:
            return Verdict(claim, a.method, b.method, "not met", difference, noise, ratio,
                           f"{claim}: **not met** (not faster): {numbers}")
    verdict = accuracy_verdict(a, b)
    return Verdict(claim, a.method, b.method, verdict, difference, noise, ratio,
                   f"{claim}: **{verdict}**: {numbers}")


def claims(summaries: Sequence[MethodSummary]) -> list[Verdict]:
    """The paper's claims that ``summaries`` can judge (see the module docstring): KernelDNA
    ResNet-18 against plain ResNet-18, the deep and the narrow control and each dynamic
    convolution; KernelDNA MobileNetV2 0.5x against the plain one. A claim whose two networks
    are not both there is left out."""
    by = {s.method: s for s in summaries}
    found = []
    for other, claim in CLAIMS.items():
        mine = "kdna_mobilenet_v2_1d2" if other == "mobilenet_v2_1d2" else "kdna_resnet18"
        if mine in by and other in by:
            found.append(_verdict(claim, by[mine], by[other], other in DYNAMIC))
    return found


def _macs(n: int | None) -> str:
    return "" if n is None else f"{n / 1e6:.2f}M"


def markdown_table(rows: Sequence[ScratchRow], lrs: Sequence[float]) -> str:
    """Per network: parameters, MACs per image, the learning rate chosen (validation top-1 at
    each rate of the grid, the chosen one in bold), test top-1 as mean ± sample standard
    deviation over seeds, inference throughput relative to its plain reference, seconds per
    training step and the training wall time of all its runs."""
    grid = " / ".join(f"{lr:g}" for lr in lrs)
    header = ["network", "params", "MACs", f"lr chosen (val top-1 % at {grid})",
              "test top-1 % (seeds)", "throughput vs plain", "s / step", "training min"]
    cells = [[s.label, f"{s.total:,}", _macs(row.macs), lr_cell(s, lrs), test_cell(s),
              "" if s.throughput is None else f"{s.throughput:.2f}x",
              f"{s.seconds_per_step:.3f}", f"{row.train_seconds / 60:.1f}"]
             for row in rows for s in [row.summary]]
    return table(header, cells, "lrrlrrrr")


def csv_rows(rows: Sequence[ScratchRow], **extra: Any) -> list[dict[str, Any]]:
    """One flat row per network (:func:`kdna.finetune.results.csv_rows`' columns, accuracies
    as fractions, then ``macs``, ``train_seconds`` and ``images_per_second``), ``extra``
    columns first."""
    return [finetune_results.csv_rows([r.summary], **extra)[0]
            | {"macs": r.macs, "train_seconds": round(r.train_seconds, 1),
               "images_per_second": r.images_per_second} for r in rows]


def read_rows(path: str | Path) -> list[ScratchRow]:
    """The rows a :func:`csv_rows` file holds, as :class:`ScratchRow` s (numbers parsed)."""
    rows = []
    for row in finetune_results.read_csv(path):
        summary = MethodSummary(
            row["method"], row["label"], row["trains"], lr=row["lr"],
            val_by_lr=row["val_top1_by_lr"], test=row["test_top1_per_seed"],
            trainable=row["trainable"], total=row["total"], task_bytes=row["task_bytes"],
            seconds_per_step=row["seconds_per_step"], steps=row["steps"],
            throughput=row["throughput"])
        rows.append(ScratchRow(summary, row.get("macs"), float(row.get("train_seconds") or 0),
                               row.get("images_per_second")))
    return rows
