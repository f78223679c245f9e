"""Splitting classification data: stratified splits fixed by a seed, prefixes that keep the
class proportions, and the view of one split.

The index functions work on a ``[N]`` tensor of integer labels and return indices. Indices
come interleaved class by class, so any prefix of them (what ``limit`` keeps) holds each class
in the proportion it has in the whole split. :class:`Split` is one split before its transform:
a base data set, which of its items, and where they came from in words; :func:`limited` and
:func:`carve` are the two steps :func:`kdna.data.load_data` applies to them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset

__all__ = ["Split", "SplitView", "balanced_subset", "carve", "dataset_labels", "limited",
           "stratified_split"]


class SplitView(Dataset):
    """Items ``indices`` of ``base`` (which yields ``(image, label)``), images ``transform``-ed."""

    def __init__(self, base: Dataset, indices: Tensor, transform: Callable) -> None:
        self.base, self.indices, self.transform = base, indices, transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        image, label = self.base[int(self.indices[i])]
        return self.transform(image), int(label)

    def labels(self) -> Tensor:
        """The ``[len(self)]`` labels, in item order (no image read where the base has
        ``targets`` or is a ``TensorDataset``)."""
        return dataset_labels(self.base)[self.indices]


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

    Its ``targets`` where it has them (``ImageFolder``, CIFAR-10) or a ``TensorDataset``'s
    second tensor, read without touching an image; otherwise (Flowers-102 and Pets keep theirs
    private) every item is read once.
    """
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[1]
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


@dataclass
class Split:
    """Items ``indices`` of ``base`` (every item, in order, where ``None``) and, in words,
    where they came from (``"train/"``, ``"carved from train/: ..."``)."""

    base: Dataset
    indices: Tensor | None
    source: str

    def __len__(self) -> int:
        return len(self.base) if self.indices is None else len(self.indices)


def _percent(fraction: float) -> str:
    return f"{100 * fraction:g}%"


def limited(split: Split, limit: int | None, seed: int) -> Split:
    """At most ``limit`` items of ``split``, the class proportions kept: a prefix of its
    (interleaved) indices, or :func:`balanced_subset` of a whole base."""
    indices = split.indices
    indices = balanced_subset(split.base, limit, seed) if indices is None else indices[:limit]
    source = split.source
    if limit is not None and limit < len(split):
        source += f" (limit: {limit} of {len(split)} kept with the class proportions)"
    return Split(split.base, indices, source)


def carve(split: Split, fraction: float, seed: int, *, what: str, classes: list[str],
          where: str) -> tuple[Split, Split]:
    """``(rest, share)``: a stratified share of ``split`` (:func:`stratified_split`, each
    class's ``round(n * fraction)``, at least one) and the rest. Every class needs two items,
    one for each side; a ``ValueError`` names those with fewer (``where``: the data they came
    from; ``what``: the share's name, e.g. "validation")."""
    indices = torch.arange(len(split.base)) if split.indices is None else split.indices
    labels = dataset_labels(split.base)[indices]
    counts = torch.bincount(labels, minlength=len(classes)).tolist()
    few = [f"{classes[c]!r} has {n}" for c, n in enumerate(counts) if n < 2]
    if few:
        raise ValueError(f"{where}: a {what} split carved out of it needs at least 2 images per "
                         f"class (1 to train on, 1 for {what}), but class {', '.join(few)}")
    rest, share = stratified_split(labels, fraction, seed)
    kept = f"{split.source}, less the {what} share"
    carved = (f"a {_percent(fraction)} stratified {what} share (seed {seed}) carved from "
              f"{split.source}")
    return (Split(split.base, indices[rest], kept), Split(split.base, indices[share], carved))
