"""Fine-tuning speed with and without KernelDNA adapters (a benchmark, not a test).

For each architecture, one training step (forward, backward, AdamW) is timed for:
the plain pretrained network trained fully (the baseline), the KernelDNA-converted network
trained adapters-only (`kdna.adapter_only`), and the converted network trained fully.
Steps run as `kdna.train.fit` runs them: bf16 autocast and channels-last on CUDA.
Ratios are to the baseline measured in the same run. Writes
benchmarks/results/finetune-speed-<device>.md and .csv (``benchmarks/finetune.py`` writes the
accuracy comparison, finetune-<device>.md).

    python benchmarks/finetune_speed.py                 # CPU: batch 32 at 64x64
    python benchmarks/finetune_speed.py --batch-size 128 --image-size 224   # GPU sizes
"""

from __future__ import annotations

import argparse
import csv
import platform
import re
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import kdna

ROOT = Path(__file__).resolve().parent


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.machine()} CPU, {torch.get_num_threads()} threads"


def step_seconds(model, x, y, device, steps, warmup, repeats):
    cuda = device.type == "cuda"
    model.to(device).train()
    if cuda:
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = F.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        if cuda:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) / steps)
    return statistics.median(times), (max(times) - min(times)) / 2


def variants(arch, image_size):
    weights = "imagenet" if arch == "efficientnet_lite0" else None
    plain = kdna.create_model(arch, kernel_dna=False, weights=weights, num_classes=10)
    yield "plain, full fine-tuning (baseline)", plain
    for trainable in ("adapters-only", "all"):
        model = kdna.create_model(arch, kernel_dna=False, weights=weights, num_classes=10)
        kdna.convert(model, example_inputs=torch.zeros(1, 3, image_size, image_size))
        if trainable == "adapters-only":
            kdna.adapter_only(model)
        yield f"KernelDNA converted, {trainable}", model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--archs", default="efficientnet_lite0,resnet18")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=ROOT / "results")
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    y = torch.randint(0, 10, (args.batch_size,), device=device)
    rows = []
    for arch in args.archs.split(","):
        baseline = None
        for name, model in variants(arch, args.image_size):
            seconds, spread = step_seconds(model, x, y, device, args.steps, args.warmup,
                                           args.repeats)
            baseline = baseline or seconds
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            rows.append({"arch": arch, "variant": name, "trainable": trainable,
                         "parameters": kdna.count_parameters(model),
                         "ms_per_step": round(1000 * seconds, 2),
                         "spread_ms": round(1000 * spread, 2),
                         "steps_per_second": round(1 / seconds, 2),
                         "speed_vs_baseline": round(baseline / seconds, 3)})
            print(rows[-1], flush=True)
    name = device_name(device)
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / f"finetune-speed-{slug}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    precision = "bf16 autocast, channels-last" if device.type == "cuda" else "fp32"
    lines = [f"# Fine-tuning speed on {name}", "",
             f"torch {torch.__version__}; batch {args.batch_size} at {args.image_size}x"
             f"{args.image_size}; AdamW; {precision}; "
             f"median of {args.repeats} x {args.steps} steps after {args.warmup} warm-up steps.",
             "", "| arch | variant | trainable | parameters | ms / step (± half-range) | "
             "steps / s | speed vs baseline |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['arch']} | {r['variant']} | {r['trainable']:,} | {r['parameters']:,} | "
              f"{r['ms_per_step']} ± {r['spread_ms']} | {r['steps_per_second']} | "
              f"{r['speed_vs_baseline']}x |" for r in rows]
    (args.out / f"finetune-speed-{slug}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
