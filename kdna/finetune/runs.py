"""One fine-tuning run: a method prepared from the pretrained network, trained under a
:class:`~kdna.finetune.protocol.Protocol` at one learning rate and seed, and evaluated.

:func:`train_method` is the one place where fine-tuning trains; :func:`kdna.finetune`, the
comparisons (:mod:`kdna.finetune.compare`), the demo and the notebooks all call it. A run:

1. prepares a fresh copy of the pretrained network (:func:`kdna.finetune.methods.prepare`: a
   new head, exactly the method's parameters trainable, its random draws from the seed);
2. freezes its BatchNorm statistics (:func:`kdna.nn.freeze_batchnorm`) unless the protocol
   says ``batchnorm="train"``;
3. trains it with :func:`kdna.train.train_classifier`: AdamW, warm-up then cosine, no weight
   decay on norms, biases, static scales or gates (``weight_decay_on="weights"``), on a seeded
   draw of whole batches that makes ``protocol.steps`` steps (:func:`draw`); checkpoints go to
   ``out_dir`` when one is given, and a run whose ``last.pt`` is there resumes from it;
4. evaluates it on validation and, if asked, on test.

:func:`cached_run` / :func:`store_run` keep a run's :class:`~kdna.finetune.results.RunResult`
as JSON, keyed by :func:`~kdna.finetune.protocol.run_key`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from kdna._checks import one_of
from kdna._files import write_atomically
from kdna.data.cache import cache_root
from kdna.finetune.methods import FinetuneMethod, MethodContext, Prepared, get_method, prepare
from kdna.finetune.protocol import Protocol, ProtocolSplits
from kdna.finetune.results import RunResult
from kdna.finetune.task import task_bytes
from kdna.nn.norm import freeze_batchnorm
from kdna.nn.utils import default_device
from kdna.train.config import TrainConfig, TrainResult
from kdna.train.evaluate import Metrics, evaluate
from kdna.train.loop import train_classifier

__all__ = ["TrainedRun", "cache_folder", "cached_run", "draw", "store_run",
           "train_method", "train_run"]


@dataclass
class TrainedRun:
    """What :func:`train_method` returns: the run's numbers and everything behind them."""

    run: RunResult
    prepared: Prepared  # the trained network (``prepared.model``) and what it trains
    training: TrainResult  # the loop's history (a row per pass over the draw), steps and time
    val: Metrics
    test: Metrics | None  # None: not asked for, or the data has no test split
    initial: dict[str, torch.Tensor]  # the state right after preparing (the task file's base)


def draw(splits: ProtocolSplits, protocol: Protocol, seed: int) -> tuple[Dataset, int]:
    """The run's training data (a seeded draw of whole batches) and its number of passes,
    with ``passes * len(draw) / batch_size == protocol.steps`` exactly: the fewest passes
    the data allows that divide the steps (one pass where the training split holds a
    budget's images; more, over the same draw, where it is smaller)."""
    n, batch, steps = len(splits.train), protocol.batch_size, protocol.steps
    if n < batch:
        raise ValueError(f"the training split has {n} images, fewer than one batch of "
                         f"{batch}; lower the batch size")
    passes = max(1, math.ceil(steps * batch / n))
    while steps % passes:
        passes += 1
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return Subset(splits.train, order[: steps // passes * batch].tolist()), passes


def _config(protocol: Protocol, lr: float, seed: int, passes: int, folder: Path,
            progress: bool) -> TrainConfig:
    return TrainConfig(epochs=passes, batch_size=protocol.batch_size, optimizer="adamw",
                       lr=float(lr), weight_decay=protocol.weight_decay,
                       weight_decay_on="weights", warmup_epochs=protocol.warmup * passes,
                       seed=seed, out_dir=str(folder), tensorboard=False, progress=progress,
                       workers=0, bn_momentum=protocol.bn_momentum)


def train_method(method: str | FinetuneMethod, protocol: Protocol, splits: ProtocolSplits,
                 pretrained: nn.Module, context: MethodContext, lr: float, seed: int, *,
                 test: bool = True, device: torch.device | str | None = None,
                 progress: bool = False, out_dir: str | Path | None = None,
                 track_val: bool = False, confusion: bool = False) -> TrainedRun:
    """Prepare ``method`` from ``pretrained`` (left unchanged) and train it once under
    ``protocol`` at ``lr`` (one of ``protocol.lrs``) with ``seed``; evaluate on validation
    and, if ``test`` and the data has a test split, on test (see the module docstring).

    ``out_dir``: where its checkpoints go (a temporary folder otherwise); a ``last.pt``
    already there is resumed. ``track_val``: evaluate on validation after every pass (the
    history's curve). ``confusion``: the metrics carry confusion matrices."""
    method = get_method(method)
    one_of("lr", float(lr), protocol.lrs)
    device = default_device(device)
    context.seed = seed
    prepared = prepare(method, pretrained, context)
    if protocol.batchnorm == "frozen":
        freeze_batchnorm(prepared.model)
    data, passes = draw(splits, protocol, seed)
    initial = {k: v.detach().clone() for k, v in prepared.model.state_dict().items()
               if isinstance(v, torch.Tensor)}
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(out_dir) if out_dir is not None else Path(scratch)
        last = folder / "last.pt"
        result = train_classifier(prepared.model, data, splits.val if track_val else None,
                                  _config(protocol, lr, seed, passes, folder, progress),
                                  device=device, resume=last if last.exists() else None)
        size = task_bytes(prepared.model, initial, method.adapter_files, Path(scratch))
    val = evaluate(prepared.model, splits.val, device=device, progress=False,
                   confusion=confusion)
    tested = (evaluate(prepared.model, splits.test, device=device, progress=False,
                       confusion=confusion) if test and splits.test is not None else None)
    run = RunResult(method.name, float(lr), seed, val.top1,
                    None if tested is None else tested.top1,
                    None if tested is None else tested.loss, prepared.trainable_count,
                    prepared.total, result.steps, result.seconds_per_step, size)
    return TrainedRun(run, prepared, result, val, tested, initial)


def train_run(method: str | FinetuneMethod, protocol: Protocol, splits: ProtocolSplits,
              pretrained: nn.Module, context: MethodContext, lr: float, seed: int, *,
              test: bool = True, device: torch.device | str | None = None,
              progress: bool = False) -> tuple[RunResult, Prepared]:
    """:func:`train_method`'s run and prepared network (what comparisons keep)."""
    trained = train_method(method, protocol, splits, pretrained, context, lr, seed, test=test,
                           device=device, progress=progress)
    return trained.run, trained.prepared


def cached_run(key: str, train: Callable[[], RunResult], cache: Path | None, *,
               tested: bool = False) -> tuple[RunResult, bool]:
    """The run cached under ``cache/<key>.json`` (and ``True``), or ``train()`` stored there
    (and ``False``, replacing the file); without a cache folder, always ``train()``. With
    ``tested``, a cached run without a test accuracy (cached by a grid run that did not test
    it) counts as missing."""
    path = None if cache is None else cache / f"{key}.json"
    if path is not None and path.exists():
        run = RunResult.from_dict(json.loads(path.read_text()))
        if not tested or run.test_top1 is not None:
            return run, True
    run = train()
    store_run(key, run, cache)
    return run, False


def store_run(key: str, run: RunResult, cache: Path | None) -> None:
    """Write ``run`` as ``cache/<key>.json`` (replacing what was there); nothing without a
    cache folder."""
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        text = json.dumps(dataclasses.asdict(run), indent=1).encode()
        write_atomically(cache / f"{key}.json", lambda file: file.write(text))


def cache_folder(cache: Path | str | None, kind: str = "finetune") -> Path | None:
    """The runs' folder for a comparison's ``cache=`` argument: ``"default"`` is
    ``<cache root>/<kind>``, ``None`` no cache (train everything, store nothing), anything
    else the folder it names."""
    return cache_root(kind) if cache == "default" else None if cache is None else Path(cache)
