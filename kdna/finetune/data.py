"""The data :func:`kdna.finetune` reads: a name, a folder, or data sets, as three splits.

A name or folder goes through :func:`kdna.load_data` (every common folder layout; a missing
validation split carved out of train, a missing test split stated, never replaced), normalised
as the pretrained network expects. Data sets given as ``(train, val)`` or ``(train, val,
test)`` are used as they are: their items must already be the network's input tensors.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from torch.utils.data import Dataset

from kdna.data import DataSplits, load_data
from kdna.data.splits import dataset_labels
from kdna.finetune.protocol import ProtocolSplits
from kdna.models.pretrained import PretrainedConfig

__all__ = ["finetune_splits"]


def _given(data: Sequence[Dataset], classes: Sequence[str] | None) -> ProtocolSplits:
    if len(data) not in (2, 3) or not all(hasattr(d, "__getitem__") and hasattr(d, "__len__")
                                           for d in data):
        raise TypeError(f"data sets must be given as (train, val) or (train, val, test), "
                        f"each with __getitem__ and __len__; got {len(data)} objects of types "
                        f"{[type(d).__name__ for d in data]}")
    train, val, test = (*data, None) if len(data) == 2 else data
    names = classes if classes is not None else getattr(train, "classes", None)
    if names is None:
        names = [str(c) for c in range(int(dataset_labels(train).max()) + 1)]
    sources = {"train": "given", "val": "given",
               "test": "given" if test is not None else "none: no test data set was given"}
    return ProtocolSplits(train, val, test, list(names), "data sets", sources)


def finetune_splits(data: str | os.PathLike | Sequence[Dataset] | DataSplits, image_size: int,
                    config: PretrainedConfig, *, val_fraction: float, seed: int,
                    limit: int | None, augment: bool, flip: bool | None = None,
                    classes: Sequence[str] | None = None
                    ) -> tuple[ProtocolSplits, str | None, str]:
    """``(splits, name, resize)``: the three splits; the data's name or folder (``None`` for
    data sets, which have neither: their runs are not resumable); and how images were
    resized for evaluation, ``"whole"`` (small images resized as they are) or ``"crop"``
    (photos: resized, then the centre cropped), which a saved task repeats on new images."""
    if isinstance(data, DataSplits):
        splits = data
    elif isinstance(data, str | os.PathLike):
        splits = load_data(data, image_size=image_size, mean=config.mean, std=config.std,
                           val_fraction=val_fraction, seed=seed, augment=augment, limit=limit,
                           flip=flip)
    else:
        return _given(data, classes), None, "crop"
    resize = "whole" if splits.small else "crop"
    name = splits.name  # the canonical name of a data set, the path of a folder
    return (ProtocolSplits(splits.train, splits.val, splits.test, list(splits.classes),
                           splits.name, dict(splits.sources)), name, resize)
