"""A fine-tuning run written down: ``metrics.json``, ``report.md`` and a confusion matrix.

:func:`write_report` is what ``kdna finetune --out DIR`` leaves beside the task file: the
numbers as JSON (accuracies as fractions), a Markdown report that says what was trained, on
which splits (and where each came from), how the learning rate was chosen, the validation and
test top-1, each class's accuracy and, where a baseline ran at the same budget, what the method
adds over it; and the confusion matrix as an SVG picture (plain text, no plotting library).
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import torch

from kdna._files import write_atomically
from kdna._tables import markdown_table
from kdna.finetune.finetuned import FinetuneResult

__all__ = ["confusion_svg", "write_report"]


def _cell_colour(fraction: float) -> str:
    """White (0) to dark blue (1)."""
    r, g, b = (round(255 - fraction * (255 - c)) for c in (8, 48, 107))
    return f"rgb({r},{g},{b})"


def confusion_svg(matrix: torch.Tensor, classes: list[str], title: str) -> str:
    """The confusion matrix as an SVG document: one row per true class, one column per
    predicted class, each cell shaded by the share of its row and labelled with its count."""
    n = len(classes)
    if tuple(matrix.shape) != (n, n):
        raise ValueError(f"a confusion matrix for {n} classes must be {n}x{n}, got "
                         f"{list(matrix.shape)}")
    cell, left, top = max(18, min(48, 480 // n)), 110, 60
    rows = matrix.double() / matrix.sum(dim=1, keepdim=True).clamp(min=1)
    parts = [f'<text x="{left}" y="20" font-size="14">{html.escape(title)}</text>',
             f'<text x="{left}" y="{top - 28}" font-size="11">predicted class</text>',
             f'<text x="10" y="{top - 8}" font-size="11">true class</text>']
    for i, name in enumerate(classes):
        label = html.escape(name[:14])
        y = top + i * cell
        parts.append(f'<text x="{left - 6}" y="{y + cell / 2 + 4}" font-size="10" '
                     f'text-anchor="end">{label}</text>')
        parts.append(f'<text x="{left + i * cell + cell / 2}" y="{top - 6}" font-size="10" '
                     f'text-anchor="middle">{label[:6]}</text>')
        for j in range(n):
            share, count = float(rows[i, j]), int(matrix[i, j])
            ink = "white" if share > 0.5 else "black"
            parts.append(f'<rect x="{left + j * cell}" y="{y}" width="{cell}" height="{cell}" '
                         f'fill="{_cell_colour(share)}" stroke="#ccc"/>')
            if cell >= 22:
                parts.append(f'<text x="{left + j * cell + cell / 2}" y="{y + cell / 2 + 4}" '
                             f'font-size="10" text-anchor="middle" fill="{ink}">{count}</text>')
    width, height = left + n * cell + 20, top + n * cell + 20
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>'
            + "".join(parts) + "</svg>\n")


def _percent(value: float | None) -> str:
    return "none" if value is None else f"{100 * value:.1f}%"


def _lr_line(result: FinetuneResult, lr_source: str) -> str:
    if result.lr_search:
        grid = ", ".join(f"{lr:g}: {100 * v:.1f}%" for lr, v in result.lr_search.items())
        return (f"chosen on the validation split among the grid (validation top-1 at each "
                f"rate: {grid})")
    return lr_source


def _class_rows(result: FinetuneResult) -> str:
    reported, split = result.reported, "test" if result.test is not None else "validation"
    counts = reported.confusion.sum(dim=1).tolist()
    rows = [[name, int(n), _percent(acc) if n else "no image"]
            for name, n, acc in zip(result.classes, counts, reported.per_class(), strict=True)]
    return markdown_table(["class", f"{split} images", f"{split} top-1"], rows, "lrr")


def _baseline_text(result: FinetuneResult, baseline: FinetuneResult | None) -> str:
    if baseline is None:
        return ""
    ours, theirs = result.reported.top1, baseline.reported.top1
    split = "test" if result.test is not None else "validation"
    table = markdown_table(["method", "lr", f"{split} top-1", "trainable"], [
        [r.method.label, f"{r.lr:g}", _percent(r.reported.top1), f"{r.trainable:,}"]
        for r in (result, baseline)], "lrrr")
    return (f"\n## Beside {baseline.method.label}, at the same budget\n\n{table}\n\n"
            f"{result.method.label} adds **{100 * (ours - theirs):+.1f} points** of {split} "
            f"top-1 over {baseline.method.label} in this run (one seed).\n")


def write_report(result: FinetuneResult, folder: Path, *, task_folder: Path,
                 lr_source: str, baseline: FinetuneResult | None = None) -> Path:
    """Write ``metrics.json``, ``confusion.svg`` and ``report.md`` into ``folder`` (each
    through a temporary file and a rename); the report's path."""
    folder.mkdir(parents=True, exist_ok=True)
    task_bytes = sum(p.stat().st_size for p in task_folder.iterdir() if p.is_file())
    summary = result.summary() | {"task_folder": str(task_folder), "task_bytes": task_bytes,
                                  "lr_source": "search" if result.lr_search else lr_source}
    if baseline is not None:
        summary["baseline"] = baseline.summary()
    split = "test" if result.test is not None else "validation"
    svg = confusion_svg(result.reported.confusion, result.classes,
                        f"{result.method.label}: {split} confusion matrix")
    files = {"metrics.json": json.dumps(summary, indent=2) + "\n", "confusion.svg": svg}
    files["report.md"] = _markdown(result, summary, lr_source, baseline)
    for name, text in files.items():
        data = text.encode()
        write_atomically(folder / name, lambda file, data=data: file.write(data))
    return folder / "report.md"


def _markdown(result: FinetuneResult, summary: dict, lr_source: str,
              baseline: FinetuneResult | None) -> str:
    sizes = {name: len(getattr(result.splits, name)) for name in ("train", "val")}
    test_size = len(result.splits.test) if result.splits.test is not None else 0
    sources = "\n".join(f"- {split}: {text}" for split, text in result.sources.items())
    no_test = ("" if result.test is not None else
               "\n**No test split**: the accuracies below are on the validation split"
               + (", which also chose the learning rate, so they are optimistic."
                  if result.lr_search else "."))
    full_bytes = 4 * result.total
    return f"""# kdna finetune: {result.method.label} on {result.data or "the given data sets"}

{result.arch or result.base} with its pretrained weights ({result.config.source}), a new
head for {len(result.classes)} classes; {result.method.trains}.

## Data

{sizes["train"]:,} training, {sizes["val"]:,} validation and {test_size:,} test images,
{result.image_size}x{result.image_size}, normalised with mean {list(result.config.mean)} and std
{list(result.config.std)}.

{sources}

## Training

{result.steps} AdamW steps, warm-up then cosine, BatchNorm statistics frozen, no weight decay
on norms, biases, static scales or gates; learning rate {result.lr:g}:
{_lr_line(result, lr_source)}. Seed {result.seed}; {result.seconds:.0f} s on {result.device}.

## Results
{no_test}
| validation top-1 | test top-1 | trainable parameters |
|---:|---:|---:|
| {_percent(result.val.top1)} | {_percent(None if result.test is None else result.test.top1)} \
| {result.trainable:,} of {result.total:,} |

{_class_rows(result)}

![confusion matrix](confusion.svg)
{_baseline_text(result, baseline)}
## The task file

`{summary["task_folder"]}`: {summary["task_bytes"] / 2**10:,.0f} KB, against
{full_bytes / 2**20:,.1f} MB for the whole network in float32. Predict with
`kdna predict {Path(summary["task_folder"]).parent} IMAGE...`, or in Python with
`kdna.finetune.load_task(folder).predict(["image.jpg"])`.
"""
