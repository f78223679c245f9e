"""``kdna demo``: the kit's main job on its embedded default, offline, in a few CPU minutes.

Convert the pretrained EfficientNet-Lite0 (ImageNet weights from pip) into a KernelDNA
network, fine-tune only its adapters, norms and head on 5,000 real MNIST digits, evaluate,
and write a short report to ``runs/demo/``: ``report.md`` (read it), ``routing.html`` (the
gates of one child per input; needs the ``viz`` extra, plotly), ``summary.json``
(machine-readable, accuracies as fractions), ``metrics.csv`` and TensorBoard events, and the
checkpoints.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

from kdna.analysis.routing import capture_routing, routing_statistics
from kdna.conversion.convert import convert
from kdna.conversion.freeze import adapter_only
from kdna.data.classification import load_data
from kdna.models import create_model
from kdna.models.efficientnet_lite import MEAN, STD
from kdna.nn.utils import device_description
from kdna.train.evaluate import evaluate
from kdna.train.loop import TrainConfig, fit

__all__ = ["run_demo"]


def _routing_figure(model, data, out: Path) -> tuple[str, str]:
    """Write the most class-specific child's per-input routing as a standalone HTML page.

    Returns the report's words for the page, and the child. Without the ``viz`` extra
    (plotly is not a core dependency) no page is written and the words say why.
    """
    loader = DataLoader(Subset(data.val, range(min(200, len(data.val)))), batch_size=100)
    routing = capture_routing(model, loader)
    labels = torch.cat([y for _, y in loader])
    stats = routing_statistics(routing, labels)
    score = stats.specialisation
    chosen = max(score, key=lambda name: score[name] if score[name] == score[name] else -1.0)
    try:
        from kdna.viz.figures import routing_heatmap
    except ImportError as error:  # the message names the extra: pip install 'kdna[viz]'
        return f"routing.html was not written ({error}); it would show", chosen
    order = torch.argsort(labels, stable=True)
    fig = routing_heatmap(routing.gates[chosen][order], layer=chosen,
                          labels=[data.classes[i] for i in labels[order].tolist()])
    page = out / "routing.html"
    fig.write_html(page, include_plotlyjs=True, full_html=True)
    return f"`{page}` shows", chosen


def run_demo(out: Path = Path("runs/demo"), *, epochs: int = 4, image_size: int = 64,
             limit: int | None = None, lr: float = 3e-2, progress: bool = True,
             device: torch.device | str | None = None) -> Path:
    """Run the demo and return the path of its Markdown report."""
    start = time.perf_counter()
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    data = load_data("mnist", image_size=image_size, mean=MEAN, std=STD, seed=0, limit=limit)
    model = create_model("efficientnet_lite0", kernel_dna=False, weights="imagenet",
                         num_classes=data.num_classes)
    probe = torch.stack([data.val[i][0] for i in range(32)])
    report = convert(model, example_inputs=probe)
    trainable = adapter_only(model)
    config = TrainConfig(epochs=epochs, batch_size=64, optimizer="adamw", lr=lr,
                         weight_decay=0.0, warmup_epochs=0.2, bn_recalibration=8,
                         out_dir=str(out), progress=progress)
    before = evaluate(model, data.val, device=device, progress=False)
    result = fit(model, data.train, data.val, config, device=device,
                 meta={"arch": "efficientnet_lite0", "convert": True, "layout": report.layout,
                       "num_classes": data.num_classes, "image_size": image_size,
                       "data": "mnist", "seed": 0, "limit": limit, "adapters_only": True})
    final = result.history[-1]
    routing_page, chosen = _routing_figure(model, data, out)
    summary = {
        "device": device_description(device), "data": f"MNIST ({len(data.train)} train, "
        f"{len(data.val)} val, {image_size}x{image_size})",
        "parameters_pretrained": report.params_before, "parameters_kernel_dna":
        report.params_after, "trainable": trainable.trainable, "groups": len(report.groups),
        "children": len(report.children), "val_top1_before": before.top1,  # fractions
        "val_top1": final["val_top1"], "epochs": epochs, "steps": result.steps,
        "train_seconds": round(result.seconds, 1),
        "total_seconds": round(time.perf_counter() - start, 1)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    sizes = (f"{report.params_before:,} -> {report.params_after:,} ({report.saved_fraction:.1%} "
             f"saved; {len(report.groups)} parents, {len(report.children)} children)")
    timing = f"{result.seconds:.0f} s ({result.seconds_per_step:.2f} s per step, with evaluation)"
    path = out / "report.md"
    path.write_text(f"""# kdna demo: KernelDNA adapters on a pretrained CNN

EfficientNet-Lite0 (ImageNet weights, offline) converted by `kdna.convert`, then fine-tuned
adapters-only (`kdna.adapter_only`) on {summary["data"]}.

| quantity | value |
|---|---|
| device | {summary["device"]} |
| parameters, pretrained -> KernelDNA | {sizes} |
| trainable (adapters, norms, head) | {trainable} |
| validation top-1 before fine-tuning (new 10-class head) | {before.top1:.1%} |
| validation top-1 after {epochs} epochs ({result.steps} steps) | {final["val_top1"]:.1%} |
| training time | {timing} |
| total time | {summary["total_seconds"]:.0f} s |

Routing: {routing_page} the gate of {chosen} (the child whose routing depends most on
the digit) for 200 validation digits sorted by class, one row each.

Logs: `{out / "metrics.csv"}` and TensorBoard events in `{out}`; checkpoints `last.pt`, `best.pt`
(evaluate again with `kdna eval --resume {out / "best.pt"}`).
""")
    return path
