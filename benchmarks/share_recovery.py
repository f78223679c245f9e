"""Sharing a pretrained network's kernels, and what recovery buys back (a benchmark, not a test).

For the pretrained EfficientNet-Lite0, and for each residual rank in ``--ranks``, the groups of
same-shaped layers are ordered by the damage each does alone (:func:`plan_by_damage`, on a
batch of recovery crops, one layer at a time), and for each parameter saving in
``--savings`` the least damaging layers that reach it are shared (relaxed children of that
rank, gates capped at 8 hidden units, the parent a member kept as it is unless
``--parent-init`` says otherwise). Each shared network is measured on held-out crops
against the original (top-1 agreement, KL divergence), before and after recovery by
:func:`distill` (block by block, on the recovery crops).

The recovery crops and the held-out crops come from disjoint photos (offline, see
data/README.md), so the held-out figure measures what recovery generalises to. Writes
``benchmarks/results/share-recovery-<device>.md`` and ``.csv``, with the wall time.

    python benchmarks/share_recovery.py            # the CPU run (about 10 minutes on 2 cores)
    python benchmarks/share_recovery.py --quick    # a smoke run of a minute
"""

from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import re
import time
from pathlib import Path

import torch

import kdna
from kdna.conversion import apply_plan
from kdna.conversion.budget import plan_by_damage
from kdna.conversion.recovery import distill
from kdna.data.photos import HELD_OUT_PHOTOS as HELD_OUT
from kdna.data.photos import RECOVERY_PHOTOS as RECOVERY
from kdna.data.photos import photo_crops
from kdna.models.efficientnet_lite import MEAN, STD

RESULTS = Path(__file__).parent / "results"
FIELDS = ["rank", "target_saving", "saving", "groups", "top1_before", "kl_before",
          "top1_after", "kl_after", "recovery_seconds"]


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[0, 8, 32])
    parser.add_argument("--savings", type=float, nargs="+", default=[0.05, 0.10, 0.15])
    parser.add_argument("--recovery-images", type=int, default=128)
    parser.add_argument("--held-out-images", type=int, default=96)
    parser.add_argument("--steps", type=int, default=100, help="block-stage steps")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--parent-init", default="member", choices=["member", "mean", "lsq"])
    parser.add_argument("--quick", action="store_true", help="one rank, one saving, few steps")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.quick:
        args.ranks, args.savings, args.steps = [8], [0.10], 10
        args.recovery_images, args.held_out_images = 32, 32
    return args


def normalised(images: torch.Tensor) -> torch.Tensor:
    mean, std = torch.tensor(MEAN)[:, None, None], torch.tensor(STD)[:, None, None]
    return (images - mean) / std


def one_rank(teacher, rank, args, recovery, held_out) -> list[dict]:
    """Every saving for one residual rank: the damage order once, then share and recover."""
    settings = {"parent_init": args.parent_init, "residual_rank": rank, "gate_max_hidden": 8}
    ordered = plan_by_damage(teacher, max(args.savings), recovery[:16], progress=False,
                             **settings)
    rows = []
    for target in args.savings:
        plan = ordered.plan_for(target)
        student = copy.deepcopy(teacher)
        apply_plan(student, dataclasses.replace(plan, example_inputs=None, original_output=None))
        saving = 1 - kdna.count_parameters(student) / kdna.count_parameters(teacher)
        result = distill(student, teacher, recovery, held_out=held_out, block_steps=args.steps,
                         logit_steps=0, lr=args.lr, batch_size=args.batch_size, progress=False)
        rows.append({"rank": rank, "target_saving": target, "saving": round(saving, 4),
                     "groups": len(plan.layout), "top1_before": result.before.top1,
                     "kl_before": round(result.before.kl, 4), "top1_after": result.after.top1,
                     "kl_after": round(result.after.kl, 4),
                     "recovery_seconds": round(result.seconds, 1)})
        print(rows[-1], flush=True)
    return rows


def write(rows: list[dict], args, device: str, seconds: float) -> Path:
    slug = re.sub(r"[^a-z0-9]+", "-", device.lower()).strip("-")
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / f"share-recovery-{slug}.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    lines = [f"# Sharing EfficientNet-Lite0's kernels, and recovery ({device})", "",
             f"Wall time: {seconds:.0f} s. Agreement with the original network on "
             f"{args.held_out_images} held-out crops of {', '.join(HELD_OUT)}; recovery on "
             f"{args.recovery_images} crops of the other {len(RECOVERY)} photos, "
             f"{args.steps} block-stage steps (batch {args.batch_size}, Adam {args.lr:g}). "
             f"Parents: {args.parent_init!r}; gates capped at 8 hidden units; the layers "
             "to share chosen by measured damage, one at a time.", "",
             "| residual rank | saving (target) | groups | top-1 before | KL before | "
             "top-1 after recovery | KL after |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['rank']} | {r['saving']:.1%} ({r['target_saving']:.0%}) | "
                     f"{r['groups']} | {r['top1_before']:.1%} | {r['kl_before']:.3f} | "
                     f"{r['top1_after']:.1%} | {r['kl_after']:.3f} |")
    path = args.out / f"share-recovery-{slug}.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> None:
    args = arguments()
    start = time.perf_counter()
    torch.manual_seed(0)
    teacher = kdna.create_model("efficientnet_lite0", kernel_dna=False, weights="imagenet").eval()
    recovery = normalised(photo_crops(args.recovery_images, RECOVERY, seed=0))
    held_out = normalised(photo_crops(args.held_out_images, HELD_OUT, seed=1))
    rows = [row for rank in args.ranks for row in one_rank(teacher, rank, args, recovery,
                                                              held_out)]
    device = kdna.nn.device_description("cpu")
    if args.quick:
        print(f"quick run done in {time.perf_counter() - start:.0f} s (nothing written)")
        return
    print(f"wrote {write(rows, args, device, time.perf_counter() - start)}")


if __name__ == "__main__":
    main()
