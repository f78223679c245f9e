"""The data order of :func:`kdna.train.train_classifier`: one permutation per epoch, from the
seed alone.

:func:`epoch_seed` turns the run's seed and an epoch into that epoch's seed (of the sampler's
permutation and of the loader's worker seeds); :class:`EpochSampler` draws the permutation and
can start part-way through it, which is how a run resumed mid-epoch skips what it has done.

With worker processes, which worker reads an item depends on where the epoch started, so an
item's random transforms would too. :class:`SeededSampler` pairs each index with a seed of the
run's seed, the epoch and the item's place in the epoch, and :class:`SeededItems` seeds the
random generators with it before reading the item: the augmentations of a resumed run are
then those of an unbroken one, whichever worker reads what.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

__all__ = ["EpochSampler", "SeededItems", "SeededSampler", "epoch_seed", "item_seed"]


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch`` in a run seeded ``seed``: it depends on nothing else, so a
    resumed run replays the same epochs. The prime multiplier keeps the epochs of nearby seeds
    apart (seed 1, epoch 0 is not seed 0, epoch 1)."""
    return seed * 100_003 + epoch


class EpochSampler(Sampler[int]):
    """A fresh permutation each epoch from ``(seed, epoch)``, optionally from a given offset.

    The order depends on nothing but the seed and the epoch, so a resumed run sees the same
    batches as an uninterrupted one, starting where it stopped.
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed, self.epoch, self.start = size, seed, 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        return iter(torch.randperm(self.size, generator=generator)[self.start:].tolist())

    def __len__(self) -> int:
        return self.size - self.start


def item_seed(seed: int, epoch: int, stream: int, position: int) -> int:
    """The seed of the item at ``position`` in epoch ``epoch`` of stream ``stream`` (a rank):
    a function of these alone, below 2**63."""
    return ((epoch_seed(seed, epoch) * 1_000_003 + stream) * 1_000_000_007 + position) % 2**63


class SeededSampler(Sampler[tuple[int, int]]):
    """``(index, seed)`` for each index of ``sampler`` (an :class:`EpochSampler` or a
    ``DistributedSampler``, both with ``epoch``; an :class:`EpochSampler`'s ``start`` counts
    in the position), for :class:`SeededItems`."""

    def __init__(self, sampler: Sampler[int], seed: int, stream: int = 0) -> None:
        self.sampler, self.seed, self.stream = sampler, seed, stream

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, first = self.sampler.epoch, getattr(self.sampler, "start", 0)
        for position, index in enumerate(self.sampler, start=first):
            yield index, item_seed(self.seed, epoch, self.stream, position)

    def __len__(self) -> int:
        return len(self.sampler)


class SeededItems(Dataset):
    """``dataset`` read by ``(index, seed)`` keys (from :class:`SeededSampler`): torch's,
    Python's and NumPy's global generators are seeded with ``seed`` before item ``index`` is
    read, so its random transforms depend on the key alone. Meant for worker processes, whose
    generators nothing else uses."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        return self.dataset[index]
