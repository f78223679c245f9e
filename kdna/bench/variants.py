"""The speed comparison: one architecture built every way, measured in one run.

:func:`comparison_models` builds, for one architecture:

| name | what |
|---|---|
| ``static`` | the plain torchvision network: the baseline every ratio is read against |
| ``kdna`` | the same network converted by :func:`kdna.convert` (same depth) |
| ``paper`` | the paper's KernelDNA layout (:func:`kdna.create_model`; deeper for ResNets) |
| ``condconv8x``, ``dyconv4x``, ``odconv1x``, ``odconv4x`` | :mod:`kdna.bench.baselines` |

Weights are random: speed does not depend on them. :func:`run_comparison` measures them all
with :func:`kdna.bench.compare`; for inference each network is first put in its deployment
form (:func:`kdna.deploy.deploy`: BatchNorms folded wherever the method allows), so the
static network gets the same treatment as KernelDNA. :func:`speed_table` and
:func:`write_csv` write the results with throughput ratios to ``static``.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import torch
import torchvision
from torch import nn

from kdna._tables import markdown_table
from kdna.bench.baselines import ARCHS as BASELINE_ARCHS
from kdna.bench.baselines import BASELINES, build_baseline
from kdna.bench.harness import Measurement, Options, compare, ratios
from kdna.conversion.config import ConvertConfig
from kdna.conversion.convert import convert
from kdna.models import create_model

__all__ = ["VARIANTS", "comparison_models", "run_comparison", "speed_table", "write_csv"]

VARIANTS = ("static", "kdna", "paper", *BASELINES)
_STATIC = {  # the plain torchvision network of each architecture
    "resnet18": torchvision.models.resnet18,
    "resnet50": torchvision.models.resnet50,
    "mobilenet_v2": torchvision.models.mobilenet_v2,
    "mobilenet_v2_1d2": lambda **kw: torchvision.models.mobilenet_v2(width_mult=0.5, **kw),
}


def comparison_models(arch: str = "resnet18", variants: Sequence[str] = VARIANTS, *,
                      num_classes: int = 1000, image_size: int = 224) -> dict[str, nn.Module]:
    """The networks of the comparison, by variant name (see the module docstring)."""
    if arch not in _STATIC:
        raise ValueError(f"arch must be one of {sorted(_STATIC)}, got {arch!r}")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    models: dict[str, nn.Module] = {}
    for variant in variants:
        if variant == "static":
            models[variant] = _STATIC[arch](num_classes=num_classes)
        elif variant == "kdna":
            model = _STATIC[arch](num_classes=num_classes)
            # kdna.convert's default policy; the weights are random, so fitting is moot
            convert(model, ConvertConfig.pretrained(fit_scales=False),
                    example_inputs=torch.zeros(1, 3, image_size, image_size))
            models[variant] = model
        elif variant == "paper":
            models[variant] = create_model(arch, num_classes=num_classes)
        elif arch in BASELINE_ARCHS:
            models[variant] = build_baseline(arch, variant, num_classes=num_classes)
        else:
            raise ValueError(f"{variant} is only built for {list(BASELINE_ARCHS)}, not {arch!r}")
    return models


def run_comparison(arch: str = "resnet18", input_shape: tuple[int, ...] = (1, 3, 224, 224),
                   variants: Sequence[str] = VARIANTS, *, deployed: bool = True,
                   options: Options | None = None, threads: int | None = None,
                   progress: bool = False, **option_overrides) -> list[Measurement]:
    """Build the variants of ``arch`` and measure them together (see :func:`kdna.bench.compare`).

    ``deployed`` puts every network in its deployment form first (inference only).
    """
    models = comparison_models(arch, variants, image_size=input_shape[-1])
    return compare(models, input_shape, options=options, threads=threads, progress=progress,
                   deploy=deployed, **option_overrides)


def _relative(results: Sequence[Measurement], baseline: str) -> dict[str, float]:
    """Throughput ratios to ``baseline``; none when it was not measured."""
    return ratios(list(results), baseline) if any(r.name == baseline for r in results) else {}


def speed_table(results: Sequence[Measurement], baseline: str = "static") -> str:
    """A Markdown table: size, latency (median and quartiles), throughput and its ratio."""
    relative = _relative(results, baseline)
    rows = [[r.name, f"{r.params / 1e6:.2f}", f"{r.macs / 1e9:.3f}",
             f"{r.latency_ms:.1f} ({r.latency_p25_ms:.1f}-{r.latency_p75_ms:.1f})",
             f"{r.throughput:.1f}", f"{relative[r.name]:.2f}" if r.name in relative else "-",
             f"{r.peak_memory_mb:.0f}"] for r in results]
    return markdown_table(["model", "params (M)", "MACs (G)", "latency ms (p25-p75)", "img/s",
                           f"x {baseline}", "peak MiB"], rows, "lrrrrrr")


def write_csv(path: str | Path, results: Sequence[Measurement], *, baseline: str = "static",
              extra: dict[str, object] | None = None, append: bool = False) -> None:
    """Write (or append) one CSV row per result, with its ratio to ``baseline``."""
    relative = _relative(results, baseline)
    rows = [{**(extra or {}), **r.row(), f"x_{baseline}": relative.get(r.name, "")}
            for r in results]
    if not rows:
        return
    path = Path(path)
    new = not (append and path.exists())
    with path.open("w" if new else "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        if new:
            writer.writeheader()
        writer.writerows(rows)
