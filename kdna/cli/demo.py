"""``kdna demo``: the kit's main job on its embedded default, offline, in a few CPU minutes.

The pretrained EfficientNet-Lite0 (ImageNet weights from pip) is fine-tuned on 5,000 real
MNIST digits two ways in the same run, under the protocol of ``benchmarks/finetune.py``
(:class:`kdna.train.protocol.Protocol`: the same steps, batch, schedule and augmentation, each
method at the learning rate that protocol chose for it on validation): the best KernelDNA way
it found (:data:`BEST`, adapters in place), and the norms-and-head baseline beside it, so the
report says what the adapters add. Both are evaluated on the test split. Written to
``runs/demo/``: ``report.md`` (read it; it also quotes the committed benchmark rows),
``routing.html`` (the gates of the most class-specific child per test digit, each class band
labelled; needs the ``viz`` extra, plotly), ``summary.json`` (machine-readable, accuracies as
fractions) and ``adapters/`` (the task's adapter file, :func:`kdna.save_adapters`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from kdna.analysis.nulls import label_permutation_test
from kdna.analysis.routing import capture_routing
from kdna.conversion.adapters import save_adapters
from kdna.nn.conv import KernelChild
from kdna.nn.utils import device_description
from kdna.train.finetune import method_context
from kdna.train.methods import get_method
from kdna.train.protocol import Protocol, pretrained_network, protocol_splits, train_run

__all__ = ["BASELINE", "BEST", "COMMITTED", "PROTOCOL", "run_demo"]

PROTOCOL = Protocol(data="mnist")  # the CPU protocol of benchmarks/finetune.py, on MNIST 5k
BASELINE = "norms_head"
# The committed benchmark's MNIST rows (tests/test_cli.py checks them against the CSV): the
# learning rate each method got on validation, and its test top-1 over the seeds.
COMMITTED = {
    "source": "benchmarks/results/finetune-amd-epyc-2-threads.md",
    "device": "AMD EPYC, 2 threads",
    "kdna_gates_4": {"lr": 3e-3, "mean": 0.8930, "std": 0.0125, "seeds": 3},
    "norms_head": {"lr": 1e-2, "mean": 0.8727, "std": 0.0110, "seeds": 3},
}
BEST = "kdna_gates_4"  # the in-place KernelDNA method with the best MNIST test top-1 there


def _mark_class_bands(fig, names: list[str]) -> None:
    """Label each band of rows that share a class (rows sorted by class) and rule them off."""
    starts = [i for i in range(len(names)) if i == 0 or names[i] != names[i - 1]]
    ends = [*starts[1:], len(names)]
    fig.update_yaxes(showticklabels=True, tickmode="array",
                     tickvals=[(a + b - 1) / 2 for a, b in zip(starts, ends, strict=True)],
                     ticktext=[names[a] for a in starts],
                     title_text="test digits, one row each, grouped by their label")
    for boundary in starts[1:]:
        fig.add_hline(y=boundary - 0.5, line_width=1, line_color="black")


def _routing(model, splits, out: Path) -> str:
    """The report's paragraph on routing; writes ``routing.html`` when plotly is there."""
    if not any(isinstance(m, KernelChild) and m.gate is not None for m in model.modules()):
        return "The best KernelDNA way has no gates, so there is no per-input routing to show."
    count = min(200, len(splits.test))
    loader = DataLoader(Subset(splits.test, range(count)), batch_size=100)
    routing = capture_routing(model, loader)
    labels = torch.cat([y for _, y in loader])
    tests = label_permutation_test(routing, labels, permutations=200)
    chosen = max(tests, key=lambda n: tests[n].statistic
                 if tests[n].statistic == tests[n].statistic else -1.0)
    test = tests[chosen]
    words = (f"the gate of `{chosen}`, the child whose routing depends most on the digit: "
             f"the class explains {test.statistic:.0%} of its gate variance over {count} test "
             f"digits, against {test.null_mean:.0%} for shuffled labels (p = "
             f"{test.p_value:.3f}). One row per digit, grouped by label, each band labelled.")
    try:
        from kdna.viz.figures import routing_heatmap
    except ImportError as error:  # the message names the extra: pip install 'kdna[viz]'
        return f"Routing: routing.html was not written ({error}); it would show {words}"
    order = torch.argsort(labels, stable=True)
    names = [splits.classes[i] for i in labels[order].tolist()]
    fig = routing_heatmap(routing.gates[chosen][order], layer=chosen, labels=names)
    _mark_class_bands(fig, names)
    page = out / "routing.html"
    fig.write_html(page, include_plotlyjs=True, full_html=True)
    return f"Routing: `{page}` shows {words}"


def _committed(method: str) -> str:
    row = COMMITTED.get(method)
    if not row or not row["mean"]:
        return "not in the committed benchmark"
    return (f"{100 * row['mean']:.1f} ± {100 * row['std']:.1f}% ({row['seeds']} seeds, "
            f"{COMMITTED['device']})")


def _committed_gain() -> str:
    best, baseline = COMMITTED.get(BEST), COMMITTED.get(BASELINE)
    if not (best and baseline and best["mean"] and baseline["mean"]):
        return ""
    return (f"; the committed benchmark measured {100 * (best['mean'] - baseline['mean']):+.1f} "
            f"points over {best['seeds']} seeds")


def _protocol(epochs: int | None, image_size: int | None, limit: int | None) -> Protocol:
    protocol = PROTOCOL.with_overrides(limit=limit, image_size=image_size or PROTOCOL.image_size)
    if epochs is not None:  # passes over the training split instead of the protocol's steps
        train = len(protocol_splits(protocol).train)
        protocol = protocol.with_overrides(steps=max(1, epochs * (train // protocol.batch_size)))
    return protocol


def run_demo(out: Path = Path("runs/demo"), *, epochs: int | None = None,
             image_size: int | None = None, limit: int | None = None, progress: bool = True,
             device: torch.device | str | None = None) -> Path:
    """Run the demo and return the path of its Markdown report. ``epochs``, ``image_size``
    and ``limit`` change the protocol (default: the committed benchmark's)."""
    start = time.perf_counter()
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out.mkdir(parents=True, exist_ok=True)
    stages = tqdm(total=5, desc="kdna demo", disable=not progress)
    stages.set_postfix_str("data and the pretrained network")
    protocol = _protocol(epochs, image_size, limit)
    splits = protocol_splits(protocol)
    pretrained = pretrained_network(protocol)
    context = method_context(splits, protocol)
    stages.update()
    runs = {}
    for name in (BEST, BASELINE):
        stages.set_postfix_str(f"fine-tuning: {get_method(name).label}")
        lr = COMMITTED[name]["lr"]
        runs[name] = train_run(name, protocol, splits, pretrained, context, lr, 0,
                               device=device, progress=progress)
        stages.update()
    stages.set_postfix_str("routing")
    prepared = runs[BEST][1]
    routing = _routing(prepared.model, splits, out)
    stages.update()
    folder = save_adapters(prepared.model, out / "adapters")
    stages.update()
    stages.close()
    return _write(out, protocol, splits, runs, routing, folder, device, start)


def _write(out: Path, protocol: Protocol, splits, runs, routing: str, folder: Path, device,
           start: float) -> Path:
    best, baseline = runs[BEST][0], runs[BASELINE][0]
    summary = {
        "device": device_description(device), "data": f"MNIST ({len(splits.train):,} train, "
        f"{len(splits.val):,} val, {len(splits.test):,} test, {protocol.image_size}x"
        f"{protocol.image_size})", "steps": best.steps, "batch_size": protocol.batch_size,
        "methods": {r.method: {"lr": r.lr, "test_top1": r.test_top1, "trainable": r.trainable,
                               "task_bytes": r.task_bytes, "seconds_per_step": r.seconds_per_step}
                    for r in (best, baseline)},  # accuracies as fractions
        "adds_points": 100 * (best.test_top1 - baseline.test_top1),
        "total_seconds": round(time.perf_counter() - start, 1)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    rows = "\n".join(
        f"| {get_method(r.method).label} | {r.lr:g} | {100 * r.test_top1:.1f}% | "
        f"{_committed(r.method)} | {r.trainable:,} | {r.task_bytes / 2**10:.0f} KB | "
        f"{r.seconds_per_step:.3f} s |" for r in (best, baseline))
    gain = summary["adds_points"]
    path = out / "report.md"
    path.write_text(f"""# kdna demo: KernelDNA adapters on a pretrained CNN, beside norms + head

EfficientNet-Lite0 (ImageNet weights, offline) fine-tuned on {summary["data"]} under the
protocol of `benchmarks/finetune.py`: {best.steps} AdamW steps of batch {protocol.batch_size},
warm-up then cosine, each method at the learning rate that protocol chose for it on
validation; seed 0; device {summary["device"]}.

| method | lr | test top-1, this run | committed benchmark (test, mean ± sd) | trainable | \
task file | s / step |
|---|---|---|---|---|---|---|
{rows}

What the adapters add: **{gain:+.1f} points** of test top-1 over training the norms and the head
alone in this run (one seed){_committed_gain()}, for {best.trainable - baseline.trainable:,} more
trainable parameters ({get_method(BEST).trains}). The committed rows come from
`{COMMITTED["source"]}`.

{routing}

Adapter file: `{folder}` ({best.task_bytes / 2**10:.0f} KB; load it onto the pretrained network
with `kdna.load_adapters`). Total time {summary["total_seconds"]:.0f} s.
""")
    return path
