"""Train networks from scratch under one protocol and compare them: :func:`compare_networks`.

For each network (:data:`kdna.scratch.networks.NETWORKS`): train it at every learning rate of
the protocol's grid with the selection seed, keep the rate with the best *validation*
accuracy (:func:`kdna.finetune.results.choose_lr`), evaluate that run's model on the *test*
split, then train the other seeds at that rate and test them. Every run is cached as JSON
under ``<cache root>/scratch``, keyed by :func:`kdna.scratch.protocol.scratch_key`, so a
comparison with more networks or seeds reuses the runs it shares with an earlier one.
:func:`measure_networks` adds what training does not measure: MACs and inference throughput
relative to each network's plain reference, all timed interleaved in one call
(:func:`kdna.bench.compare`).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import nn
from tqdm.auto import tqdm

from kdna._checks import one_of
from kdna.bench import compare
from kdna.finetune.protocol import ProtocolSplits
from kdna.finetune.results import MethodSummary, RunResult, choose_lr, summarise
from kdna.finetune.runs import cache_folder, cached_run, draw, store_run
from kdna.nn.utils import count_parameters, default_device, device_description
from kdna.scratch.networks import build_network, get_network
from kdna.scratch.protocol import ScratchProtocol, scratch_key, scratch_splits
from kdna.train.config import TrainConfig
from kdna.train.evaluate import evaluate
from kdna.train.loop import train_classifier

__all__ = ["ScratchComparison", "compare_networks", "measure_networks", "train_at",
           "train_network"]


def train_network(network: str, protocol: ScratchProtocol, splits: ProtocolSplits, lr: float,
                  seed: int, *, test: bool = True, device: torch.device | str | None = None,
                  progress: bool = False) -> tuple[RunResult, nn.Module]:
    """Build ``network`` from ``seed`` and train it once under ``protocol`` at ``lr`` (one of
    ``protocol.lrs``): ``protocol.steps`` steps of SGD (or AdamW) on a seeded draw of the
    training split (:func:`kdna.finetune.runs.draw`), BatchNorm statistics from each batch,
    then evaluated on validation and, if ``test``, on test. Returns the run and the model."""
    one_of("lr", float(lr), protocol.lrs)
    device = default_device(device)
    torch.manual_seed(seed)
    model = build_network(network, splits.num_classes, width=protocol.width,
                          steps=protocol.steps)
    data, passes = draw(splits, protocol, seed)
    with tempfile.TemporaryDirectory() as folder:
        config = TrainConfig(epochs=passes, batch_size=protocol.batch_size,
                             optimizer=protocol.optimizer, lr=float(lr),
                             momentum=protocol.momentum, weight_decay=protocol.weight_decay,
                             warmup_epochs=protocol.warmup * passes, seed=seed, out_dir=folder,
                             tensorboard=False, progress=progress)
        result = train_classifier(model, data, None, config, device=device)
    val = evaluate(model, splits.val, device=device, progress=False)
    tested = evaluate(model, splits.test, device=device, progress=False) if test else None
    params = count_parameters(model)
    run = RunResult(get_network(network).name, float(lr), seed, val.top1,
                    None if tested is None else tested.top1,
                    None if tested is None else tested.loss, params, params, result.steps,
                    result.seconds_per_step, 0)
    return run, model


@dataclass
class ScratchComparison:
    """What :func:`compare_networks` found, for one protocol."""

    protocol: ScratchProtocol
    summaries: list[MethodSummary]  # one per network: ``method`` is its name, ``trains`` what
    runs: list[RunResult]
    device: str  # what trained them, e.g. "AMD EPYC 7B13, 1 threads"
    seconds: float  # wall time of the comparison
    reloaded: int  # runs read from the cache
    trained: int  # runs trained now
    cache: Path | None
    splits: ProtocolSplits | None = field(default=None, repr=False)

    def summary(self, network: str) -> MethodSummary:
        """The summary of ``network`` (``ValueError`` naming the compared ones otherwise)."""
        for s in self.summaries:
            if s.method == network:
                return s
        raise ValueError(f"{network!r} was not compared; the networks are "
                         f"{', '.join(s.method for s in self.summaries)}")

    def train_seconds(self, network: str) -> float:
        """Training wall time of every run of ``network`` (from the runs, cached or not)."""
        return sum(r.steps * r.seconds_per_step for r in self.runs if r.method == network)


class _Runner:
    """The runs of one comparison: cached or trained, counted, under one progress bar."""

    def __init__(self, protocol: ScratchProtocol, splits: ProtocolSplits, device: torch.device,
                 cache: Path | None, bar: tqdm) -> None:
        self.protocol, self.splits, self.device, self.cache, self.bar = (
            protocol, splits, device, cache, bar)
        self.reloaded = self.trained = 0

    def run(self, network: str, lr: float, seed: int, test: bool,
            models: dict[float, nn.Module] | None = None) -> RunResult:
        def train() -> RunResult:
            run, model = train_network(network, self.protocol, self.splits, lr, seed,
                                       test=test, device=self.device)
            if models is not None:
                models[lr] = model
            return run

        self.bar.set_postfix_str(f"{network} lr={lr:g} seed={seed}")
        key = scratch_key(self.protocol, network, lr, seed, self.device)
        run, reloaded = cached_run(key, train, self.cache, tested=test)
        self.reloaded += reloaded
        self.trained += not reloaded
        self.bar.update()
        return run

    def comparison(self, summaries: list[MethodSummary], runs: list[RunResult],
                   start: float) -> ScratchComparison:
        return ScratchComparison(self.protocol, summaries, runs,
                                 device_description(self.device), time.perf_counter() - start,
                                 self.reloaded, self.trained, self.cache, self.splits)

    def network(self, name: str) -> tuple[MethodSummary, list[RunResult]]:
        protocol, models = self.protocol, {}
        grid = [self.run(name, lr, protocol.seeds[0], False, models) for lr in protocol.lrs]
        chosen = choose_lr(grid)
        runs = [r for r in grid if r.lr != chosen]
        best = next(r for r in grid if r.lr == chosen)
        if best.test_top1 is None and chosen in models:  # test the model trained just now
            metrics = evaluate(models[chosen], self.splits.test, device=self.device,
                               progress=False)
            best.test_top1, best.test_loss = metrics.top1, metrics.loss
            store_run(scratch_key(protocol, name, chosen, best.seed, self.device), best,
                      self.cache)
        elif best.test_top1 is None:  # reloaded untested: train it again, tested
            self.bar.total += 1
            best = self.run(name, chosen, protocol.seeds[0], True)
        runs.append(best)
        runs += [self.run(name, chosen, seed, True) for seed in protocol.seeds[1:]]
        network = get_network(name)
        return summarise(name, network.label, network.what, runs), runs


def _runner(protocol: ScratchProtocol, device: torch.device | str | None,
            cache: Path | str | None, progress: bool, total: int) -> _Runner:
    """A runner for ``total`` runs: the protocol's splits, the device, the cache folder."""
    folder = cache_folder(cache, "scratch")
    splits = scratch_splits(protocol)
    bar = tqdm(total=total, desc=f"training from scratch on {splits.name}", disable=not progress)
    return _Runner(protocol, splits, default_device(device), folder, bar)


def compare_networks(networks: Sequence[str], protocol: ScratchProtocol, *,
                     device: torch.device | str | None = None,
                     cache: Path | str | Literal["default"] | None = "default",
                     progress: bool = True) -> ScratchComparison:
    """Run ``protocol`` for every network in ``networks`` (names of
    :data:`kdna.scratch.networks.NETWORKS`; see the module docstring). ``cache``: a folder
    for the runs' JSON, ``"default"`` (``<cache root>/scratch``) or ``None`` (train
    everything, store nothing)."""
    start = time.perf_counter()
    names = [get_network(n).name for n in networks]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"compare_networks needs distinct network names, got {list(networks)}")
    runner = _runner(protocol, device, cache, progress,
                     (len(protocol.lrs) + len(protocol.seeds) - 1) * len(names))
    summaries, runs = [], []
    with runner.bar:
        for name in names:
            summary, network_runs = runner.network(name)
            summaries.append(summary)
            runs += network_runs
    return runner.comparison(summaries, runs, start)


def measure_networks(networks: Sequence[str], protocol: ScratchProtocol, *, num_classes: int,
                     batch: int = 32, iters: int = 10, device: torch.device | str | None = None
                     ) -> dict[str, dict[str, float]]:
    """MACs per image and inference throughput relative to each network's plain reference
    (plain ResNet-18 or MobileNetV2 0.5x, measured beside it when not listed), every network
    in its inference form (:func:`kdna.deploy.deploy`: BatchNorms folded where the layer
    allows), timed interleaved in one :func:`kdna.bench.compare` call at ``protocol``'s image
    size. Returns ``{name: {"macs", "throughput", "images_per_second"}}``."""
    names = [get_network(n).name for n in networks]
    names += [r for r in dict.fromkeys(get_network(n).reference for n in names) if r not in names]
    models = {n: build_network(n, num_classes, width=protocol.width).eval() for n in names}
    shape = (batch, 3, protocol.image_size, protocol.image_size)
    device = str(default_device(device))
    results = {r.name: r for r in compare(models, shape, device=device, deploy=True, warmup=3,
                                          iters=iters)}
    return {n: {"macs": results[n].macs, "images_per_second": results[n].throughput,
                "throughput": results[n].throughput
                / results[get_network(n).reference].throughput} for n in names[:len(networks)]}



def train_at(rates: dict[str, float], protocol: ScratchProtocol, *, seed: int = 0,
             device: torch.device | str | None = None,
             cache: Path | str | Literal["default"] | None = "default", progress: bool = True
             ) -> ScratchComparison:
    """Train each network of ``rates`` (name -> learning rate, one of the protocol's grid)
    once with ``seed``, evaluated on validation and test: no choosing, e.g. a small live
    rerun of a committed comparison at the rates it chose. Cached as
    :func:`compare_networks` caches its runs; each summary holds the one run."""
    start = time.perf_counter()
    runner = _runner(protocol, device, cache, progress, len(rates))
    summaries, runs = [], []
    with runner.bar:
        for name, lr in rates.items():
            network = get_network(name)
            run = runner.run(network.name, lr, seed, True)
            summaries.append(MethodSummary(
                network.name, network.label, network.what, lr=run.lr,
                val_by_lr={run.lr: run.val_top1}, test=[run.test_top1], trainable=run.trainable,
                total=run.total, seconds_per_step=run.seconds_per_step, steps=run.steps))
            runs.append(run)
    return runner.comparison(summaries, runs, start)
