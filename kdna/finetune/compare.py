"""Compare fine-tuning methods under one protocol: :func:`compare_methods`.

For each method (:mod:`kdna.finetune.methods`): train it at every learning rate of the
protocol's grid with the selection seed, keep the rate with the best *validation* accuracy,
train the other seeds at that rate, and evaluate every seed's model at that rate on the
*test* split (:mod:`kdna.finetune.protocol`). A method that trains exactly the parameters of one
already compared (BitFit on a network without convolution biases is norms + head) is not run
again; one that cannot be prepared is reported with the reason. Runs are cached under the
cache root, each keyed by a hash of its whole configuration; :class:`Comparison` says how
many came from the cache and from where.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from tqdm.auto import tqdm

from kdna._checks import module_arg
from kdna.finetune.methods import FinetuneMethod, MethodContext, MethodFailed, get_method, prepare
from kdna.finetune.protocol import (
    Protocol,
    ProtocolSplits,
    example_batch,
    pretrained_network,
    protocol_splits,
    run_key,
    training_images,
)
from kdna.finetune.results import MethodSummary, RunResult, choose_lr, summarise
from kdna.finetune.runs import cache_folder, cached_run, store_run, train_run
from kdna.nn.utils import default_device, device_description
from kdna.train.evaluate import evaluate

__all__ = ["Comparison", "LiveRuns", "compare_methods", "method_context", "train_at"]


@dataclass
class Comparison:
    """What :func:`compare_methods` found, for one protocol."""

    protocol: Protocol
    summaries: list[MethodSummary]
    runs: list[RunResult]
    device: str  # what ran it, e.g. "AMD EPYC, 2 threads"
    seconds: float  # wall time of the comparison
    reloaded: int  # runs read from the cache
    trained: int  # runs trained now
    cache: Path | None  # where runs are cached (None: no cache)
    splits: ProtocolSplits | None = field(default=None, repr=False)
    context: MethodContext | None = field(default=None, repr=False)
    pretrained: nn.Module | None = field(default=None, repr=False)

    def summary(self, method: str) -> MethodSummary:
        """The summary of ``method`` (``ValueError`` naming the compared ones otherwise)."""
        for s in self.summaries:
            if s.method == method:
                return s
        raise ValueError(f"{method!r} was not compared; the methods are "
                         f"{', '.join(s.method for s in self.summaries)}")


def _tested_splits(protocol: Protocol) -> ProtocolSplits:
    """The protocol's splits; a comparison reports on test, so the data must have one."""
    splits = protocol_splits(protocol)
    if splits.test is None:
        raise ValueError(f"a comparison reports test accuracy, and {protocol.data!r} has no "
                         f"test split ({splits.sources.get('test', 'none')}); give data with "
                         f"one, e.g. a folder with train/ and test/")
    return splits


def method_context(splits: ProtocolSplits, protocol: Protocol, *, progress: bool = False
                   ) -> MethodContext:
    """The :class:`MethodContext` of a protocol's splits: the example batch and the unlabeled
    training images for recovery."""
    return MethodContext(num_classes=splits.num_classes, example_inputs=example_batch(splits),
                         images=lambda: training_images(splits, protocol.recovery_images),
                         progress=progress)


class _ProtocolRuns:
    """The runs of one comparison: cached or trained, counted, under one progress bar."""

    def __init__(self, protocol: Protocol, splits: ProtocolSplits, pretrained: nn.Module,
                 context: MethodContext, device: torch.device, cache: Path | None,
                 bar: Any) -> None:
        self.protocol, self.splits, self.pretrained = protocol, splits, pretrained
        self.context, self.device, self.cache, self.bar = context, device, cache, bar
        self.reloaded = self.trained = 0
        self.models: dict[float, nn.Module] = {}

    def run(self, method: FinetuneMethod, lr: float, seed: int, test: bool) -> RunResult:
        def train() -> RunResult:
            run, prepared = train_run(method, self.protocol, self.splits, self.pretrained,
                                      self.context, lr, seed, test=test, device=self.device)
            self.models[lr] = prepared.model
            return run

        self.bar.set_postfix_str(f"{method.name} lr={lr:g} seed={seed}")
        key = run_key(self.protocol, method, lr, seed, self.device)
        run, reloaded = cached_run(key, train, self.cache, tested=test)
        self.reloaded += reloaded
        self.trained += not reloaded
        self.bar.update()
        return run

    def tested(self, method: FinetuneMethod, run: RunResult) -> RunResult:
        """``run`` with its test accuracy: from the model kept in memory, or trained again."""
        if run.test_top1 is not None:
            return run
        model = self.models.get(run.lr)
        if model is None:
            self.bar.total += 1
            return self.run(method, run.lr, run.seed, test=True)
        metrics = evaluate(model, self.splits.test, device=self.device, progress=False)
        run.test_top1, run.test_loss = metrics.top1, metrics.loss
        store_run(run_key(self.protocol, method, run.lr, run.seed, self.device), run, self.cache)
        return run

    def method(self, method: FinetuneMethod) -> tuple[MethodSummary, list[RunResult]]:
        seed0, others = self.protocol.seeds[0], self.protocol.seeds[1:]
        self.models = {}
        grid = [self.run(method, lr, seed0, test=False) for lr in self.protocol.lrs]
        chosen = choose_lr(grid)
        runs = [self.tested(method, r) if r.lr == chosen else r for r in grid]
        self.models = {}
        runs += [self.run(method, chosen, seed, test=True) for seed in others]
        summary = summarise(method.name, method.label, method.trains, runs)
        summary.note = self.context.notes.get(method.name, "")
        return summary, runs


def _duplicate(method: FinetuneMethod, pretrained: nn.Module, context: MethodContext,
               seen: dict[tuple[Any, ...], str]) -> str | None:
    """The earlier method that trains exactly the parameters ``method`` trains (same names,
    same shapes, the same network around them), if any."""
    context.seed = 0
    prepared = prepare(method, pretrained, context)
    params = dict(prepared.model.named_parameters())
    key = (type(prepared.model).__name__, prepared.total,
           *((n, tuple(params[n].shape)) for n in prepared.trainable))
    if key in seen:
        return seen[key]
    seen[key] = method.name
    return None


def compare_methods(methods: Sequence[str | FinetuneMethod], protocol: Protocol, *,
                    device: torch.device | str | None = None,
                    cache: Path | str | Literal["default"] | None = "default",
                    pretrained: nn.Module | None = None, progress: bool = True,
                    skip_duplicates: bool = True) -> Comparison:
    """Run ``protocol`` for every method in ``methods`` (see the module docstring).

    Args:
        methods: names in :data:`kdna.finetune.methods.METHODS`, or :class:`FinetuneMethod`\\ s.
        device: where to train (default: CUDA when available).
        cache: a folder for the runs' JSON, ``"default"`` (``<cache root>/finetune``) or
            ``None`` (train everything, store nothing).
        pretrained: the network every method starts from (default:
            :func:`kdna.finetune.protocol.pretrained_network`); it is never changed.
        skip_duplicates: report a method that trains exactly the parameters of an earlier
            one as the same, without training it again.
    """
    start = time.perf_counter()
    chosen = [get_method(m) for m in methods]
    if not chosen:
        raise ValueError("compare_methods needs at least one method, got none")
    device = default_device(device)
    folder = cache_folder(cache)
    splits = _tested_splits(protocol)
    pretrained = pretrained_network(protocol) if pretrained is None else module_arg(
        "pretrained", pretrained)
    context = method_context(splits, protocol)
    per_method = len(protocol.lrs) + len(protocol.seeds) - 1
    bar = tqdm(total=per_method * len(chosen), desc=f"fine-tuning on {splits.name}",
               disable=not progress)
    protocol_runs = _ProtocolRuns(protocol, splits, pretrained, context, device, folder, bar)
    summaries, runs, seen = [], [], {}
    with bar:
        for method in chosen:
            try:
                same = _duplicate(method, pretrained, context, seen) if skip_duplicates else None
                if same is not None:
                    summaries.append(MethodSummary(method.name, method.label, method.trains,
                                                   same_as=same))
                    bar.update(per_method)
                    continue
                summary, method_runs = protocol_runs.method(method)
            except MethodFailed as error:
                summaries.append(MethodSummary(method.name, method.label, method.trains,
                                               error=str(error)))
                bar.update(per_method)
                continue
            summaries.append(summary)
            runs += method_runs
    return Comparison(protocol, summaries, runs, device_description(device),
                      time.perf_counter() - start, protocol_runs.reloaded,
                      protocol_runs.trained, folder, splits, context, pretrained)


@dataclass
class LiveRuns:
    """Runs at given learning rates (:func:`train_at`), and whether each came from the cache."""

    runs: list[RunResult]
    reloaded: list[bool]
    cache: Path | None
    keys: list[str]
    splits: ProtocolSplits | None = field(default=None, repr=False)  # the data they used


def train_at(lrs: dict[str, float], protocol: Protocol, *, seed: int = 0,
             device: torch.device | str | None = None,
             cache: Path | str | Literal["default"] | None = "default",
             pretrained: nn.Module | None = None, progress: bool = True) -> LiveRuns:
    """Train each method of ``lrs`` (name -> learning rate, one of the protocol's grid) once
    with ``seed``, evaluated on validation and test: no choosing, e.g. to check a committed
    comparison at the rates it chose. Cached as :func:`compare_methods` caches its runs."""
    device = default_device(device)
    folder = cache_folder(cache)
    splits = _tested_splits(protocol)
    pretrained = pretrained_network(protocol) if pretrained is None else pretrained
    context = method_context(splits, protocol)
    live = LiveRuns([], [], folder, [], splits)
    for name, lr in tqdm(lrs.items(), desc=f"fine-tuning on {splits.name}", disable=not progress):
        key = run_key(protocol, name, lr, seed, device)

        def train(name: str = name, lr: float = lr) -> RunResult:
            return train_run(name, protocol, splits, pretrained, context, lr, seed,
                             device=device)[0]

        run, reloaded = cached_run(key, train, folder, tested=True)
        live.runs.append(run)
        live.reloaded.append(reloaded)
        live.keys.append(key)
    return live
