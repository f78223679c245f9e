"""The data order of :func:`kdna.train.fit`: one permutation per epoch, from the seed alone.

:func:`epoch_seed` turns the run's seed and an epoch into that epoch's seed (of the sampler's
permutation and of the loader's worker seeds); :class:`EpochSampler` draws the permutation and
can start part-way through it, which is how a run resumed mid-epoch skips what it has done.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

__all__ = ["EpochSampler", "epoch_seed"]


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
