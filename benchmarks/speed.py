"""KernelDNA against the static network and the other dynamic convolutions, in one harness.

    python benchmarks/speed.py                # CPU, 2 threads: about 6 minutes on 2 cores
    python benchmarks/speed.py --device cuda  # GPU: batch 128, fp32 and bf16 channels-last

Writes ``benchmarks/results/<device>.md`` and ``.csv``. Every ratio is read against the static
network measured in the same run, interleaved round by round (:func:`kdna.bench.compare`).
Inference is timed in each network's deployment form (:func:`kdna.deploy.deploy`: BatchNorms
folded wherever the method allows, the static network included); "eager" rows show the same
networks without folding. The targets from issue 6 are checked at the end of the report.
Not a test: timings on shared machines are noisy, so read the spread column too.
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import torch

from kdna.bench import Measurement, Options, device_description, ratios
from kdna.bench.variants import VARIANTS, run_comparison, speed_table, write_csv

RESULTS = Path(__file__).parent / "results"
ARCHS = ("resnet18", "mobilenet_v2")
TARGETS = {"kdna": 0.95, "paper": 0.85}  # inference throughput / static
TRAIN_TARGET = 1.25                       # kdna training step time / static
AHEAD_OF = {"odconv4x": 3.0, "dyconv4x": 3.0}  # kdna throughput / theirs


def _runs(device: str, quick: bool) -> list[tuple[str, Options, int, tuple[str, ...]]]:
    """(label, options, batch, variants) for every table of the report."""
    cheap = ("static", "kdna", "paper")
    if quick:  # a smoke run: tiny and fast, numbers meaningless
        return [("inference, deployed", Options(warmup=0, iters=2, deploy=True), 2, VARIANTS),
                ("training step", Options(mode="train", warmup=0, iters=1), 2, cheap)]
    if device == "cpu":
        return [
            ("inference, deployed", Options(warmup=5, iters=60, deploy=True), 1, VARIANTS),
            ("inference, deployed", Options(warmup=2, iters=8, deploy=True), 32, VARIANTS),
            ("inference, eager", Options(warmup=2, iters=8), 32, cheap),
            ("training step", Options(mode="train", warmup=1, iters=3), 32, cheap),
        ]
    gpu = {"device": device, "channels_last": True, "warmup": 10, "iters": 30}
    return [
        ("inference, deployed, fp32", Options(**gpu, deploy=True), 128, VARIANTS),
        ("inference, deployed, bf16", Options(**gpu, deploy=True, dtype="bf16"), 128, VARIANTS),
        ("inference, eager, bf16", Options(**gpu, dtype="bf16"), 128, cheap),
        ("training step, bf16", Options(**gpu, mode="train", dtype="bf16"), 128, cheap),
    ]


def _checks(label: str, arch: str, batch: int, results: list[Measurement]) -> list[str]:
    """One line per target that applies to this table: measured, target, met or not."""
    rel = ratios(results, "static")
    lines = []

    def line(what: str, value: float, target: float, higher: bool = True) -> None:
        met = value >= target if higher else value <= target
        sign = ">=" if higher else "<="
        lines.append(f"| {arch} | {batch} | {label} | {what} | {value:.2f} | {sign} {target} "
                     f"| {'met' if met else '**not met**'} |")

    if label.startswith("training"):
        line("kdna step time / static", 1 / rel["kdna"], TRAIN_TARGET, higher=False)
        return lines
    if "eager" in label:
        return lines
    for name, target in TARGETS.items():
        line(f"{name} throughput / static", rel[name], target)
    for name, factor in AHEAD_OF.items():
        if name in rel:
            line(f"kdna throughput / {name}", rel["kdna"] / rel[name], factor)
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (ignored on a GPU)")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--archs", nargs="+", default=list(ARCHS))
    p.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, no real numbers")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    if args.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    else:
        torch.set_num_threads(args.threads)
    size = 32 if args.quick else args.size
    device = device_description(args.device)
    slug = re.sub(r"[^a-z0-9]+", "-", device.lower()).strip("-")
    args.out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = args.out / f"{slug}.csv", args.out / f"{slug}.md"
    sections, checks, first, start = [], [], True, time.time()
    for arch in args.archs:
        for label, options, batch, variants in _runs(args.device, args.quick):
            print(f"{arch}, batch {batch}, {label} ...", flush=True)
            results = run_comparison(arch, (batch, 3, size, size), variants, options=options,
                                     deployed=options.deploy, progress=True)
            sections.append(f"### {arch}, batch {batch}, {size}x{size}, {label}\n\n"
                            + speed_table(results))
            print(sections[-1], flush=True)
            checks += _checks(label, arch, batch, results)
            write_csv(csv_path, results, extra={"arch": arch, "label": label}, append=not first)
            first = False
    report = ["# Speed: KernelDNA, the static network and other dynamic convolutions\n",
              f"Device: **{device}** (torch {torch.__version__}). Written by "
              f"`benchmarks/speed.py{' --quick' if args.quick else ''}` in "
              f"{(time.time() - start) / 60:.1f} minutes. Ratios are to `static` measured in "
              "the same run; `kdna` is the network converted by `kdna.convert` (same depth), "
              "`paper` the paper's layout.\n",
              "## Targets\n", "| arch | batch | table | what | measured | target | |",
              "|---|---:|---|---|---:|---:|---|", *checks, "", "## Tables\n",
              "\n\n".join(sections), ""]
    md_path.write_text("\n".join(report))
    print(f"wrote {md_path} and {csv_path}")


if __name__ == "__main__":
    main()
