"""Splitting classification data: stratified train/validation splits fixed by a seed, prefixes
that keep the class proportions, and the view of one split.

Every function works on a ``[N]`` tensor of integer labels and returns indices. Indices come
interleaved class by class, so any prefix of them (what ``limit`` keeps) holds each class in
the proportion it has in the whole split.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["SplitView", "balanced_subset", "dataset_labels", "stratified_split"]


class SplitView(Dataset):
    """Items ``indices`` of ``base`` (which yields ``(image, label)``), images ``transform``-ed."""

    def __init__(self, base: Dataset, indices: Tensor, transform: Callable) -> None:
        self.base, self.indices, self.transform = base, indices, transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        image, label = self.base[int(self.indices[i])]
        return self.transform(image), int(label)


def _shuffled_classes(labels: Tensor, seed: int) -> list[Tensor]:
    gen = torch.Generator().manual_seed(seed)
    groups = [torch.nonzero(labels == c).flatten() for c in labels.unique()]
    return [g[torch.randperm(len(g), generator=gen)] for g in groups]


def _interleave(groups: list[Tensor]) -> Tensor:
    """Concatenate per-class indices so that every prefix keeps the class proportions."""
    groups = [g for g in groups if len(g)]
    if not groups:
        return torch.zeros(0, dtype=torch.long)
    position = torch.cat([(torch.arange(len(g)) + 0.5) / len(g) for g in groups])
    return torch.cat(groups)[torch.sort(position, stable=True).indices]


def stratified_split(labels: Tensor, val_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Each class's shuffled indices: round(n * val_fraction) of them (at least one, never all
    of a class with two or more) to val, the rest to train."""
    train, val = [], []
    for group in _shuffled_classes(labels, seed):
        n = len(group)
        n_val = min(max(int(n * val_fraction + 0.5), 1), n - 1) if n > 1 else 0
        val.append(group[:n_val])
        train.append(group[n_val:])
    return _interleave(train), _interleave(val)


def dataset_labels(dataset: Dataset) -> Tensor:
    """The ``[N]`` labels of a data set of ``(image, label)`` items.

    Its ``targets`` where it has them (``ImageFolder``, CIFAR-10), read without touching an
    image; otherwise (Flowers-102 and Pets keep theirs private) every item is read once.
    """
    targets = getattr(dataset, "targets", None)
    if targets is not None:
        return torch.as_tensor(targets)
    return torch.as_tensor([int(dataset[i][1]) for i in range(len(dataset))])


def balanced_subset(dataset: Dataset, limit: int | None, seed: int) -> Tensor:
    """All indices of ``dataset`` in order, or ``limit`` of them keeping the class proportions
    (the labels are only read when ``limit`` is smaller than the data set)."""
    if limit is None or limit >= len(dataset):
        return torch.arange(len(dataset))
    return _interleave(_shuffled_classes(dataset_labels(dataset), seed))[:limit]
