"""Evaluation: loss and accuracy of a classifier, and re-estimating BatchNorm statistics.

Used by :func:`kdna.train.train_classifier` after every epoch, and on their own (``kdna eval``).
Accuracies are fractions in [0, 1] (printed tables show them as percentages).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from kdna.nn.utils import device_of
from kdna.train.devices import loader_options
from kdna.train.distributed import is_distributed, rank

__all__ = ["Metrics", "evaluate", "recalibrate_batchnorm"]


@dataclass(frozen=True)
class Metrics:
    """Loss and accuracy over a data set: mean cross-entropy, top-1 and top-5 accuracy as
    fractions in [0, 1], and the number of samples, each counted once."""

    loss: float
    top1: float  # fraction of samples whose arg-max class is the label
    top5: float  # fraction whose label is among the 5 (or all, if fewer) highest logits
    samples: int
    # with evaluate(confusion=True): [classes, classes] counts, row = label, column = the
    # arg-max class; its diagonal over its row sums is each class's accuracy
    confusion: torch.Tensor | None = field(default=None, compare=False)

    def per_class(self) -> list[float]:
        """Each class's accuracy (a fraction; NaN for a class with no sample)."""
        if self.confusion is None:
            raise ValueError("these metrics carry no confusion matrix; evaluate with "
                             "confusion=True")
        counts = self.confusion.sum(dim=1).double()
        return (self.confusion.diagonal().double() / counts).tolist()


def device_batches(loader: DataLoader, device: torch.device, channels_last: bool, desc: str,
                   show: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(images, labels)`` of ``loader`` on ``device`` (images channels-last if asked),
    under a tqdm bar titled ``desc`` when ``show``."""
    for images, labels in tqdm(loader, desc=desc, leave=False, disable=not show):
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        yield images, labels.to(device, non_blocking=True)


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, *, batch_size: int = 256,
             device: torch.device | str | None = None, workers: int | None = None,
             progress: bool = True, channels_last: bool = False, confusion: bool = False
             ) -> Metrics:
    """Cross-entropy, top-1 and top-5 accuracy (fractions) of ``model`` on ``dataset``, in
    eval mode.

    Under ``torch.distributed`` rank ``r`` of ``w`` evaluates samples ``r, r + w, r + 2w,
    ...`` (no padding, unlike ``DistributedSampler``: every sample counts exactly once) and
    the sums are all-reduced, so every rank returns the metrics of the whole data set.
    ``workers``: DataLoader worker processes (``None``: :func:`kdna.train.devices.loader_workers`
    of the model's device). ``confusion``: also count the confusion matrix
    (:attr:`Metrics.confusion`).
    """
    if device is not None:
        model.to(device)
    device = device_of(model)
    distributed = is_distributed()
    if distributed:
        model = _local(model)
        dataset = Subset(dataset, range(dist.get_rank(), len(dataset), dist.get_world_size()))
    loader = DataLoader(dataset, batch_size=batch_size, **loader_options(device, workers))
    was_training = model.training
    model.eval()
    totals = torch.zeros(4, dtype=torch.float64, device=device)  # loss, top1, top5, n
    matrix = None
    for images, labels in device_batches(loader, device, channels_last, "eval",
                                         progress and rank() == 0):
        logits = model(images).float()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = top == labels[:, None]
        totals += torch.stack([F.cross_entropy(logits, labels, reduction="sum"),
                               hits[:, 0].sum(), hits.any(dim=1).sum(),
                               torch.tensor(len(labels), device=device)]).double()
        if confusion:
            classes = logits.shape[1]
            counts = torch.bincount(labels * classes + top[:, 0], minlength=classes ** 2)
            matrix = counts if matrix is None else matrix + counts
    if distributed:
        dist.all_reduce(totals)
        if matrix is not None:
            dist.all_reduce(matrix)
    model.train(was_training)
    loss, top1, top5, n = totals.tolist()
    if n == 0:
        raise ValueError("cannot evaluate on an empty data set")
    if matrix is not None:
        matrix = matrix.view(classes, classes).cpu()
    return Metrics(loss / n, top1 / n, top5 / n, int(n), matrix)


def _local(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper, its buffers (BatchNorm statistics)
    made rank 0's, as DDP's next forward would: ranks then evaluate the same network, and
    shards of different sizes (or an empty one) need no collective call per batch."""
    if not isinstance(model, nn.parallel.DistributedDataParallel):
        return model
    if model.broadcast_buffers:
        for buffer in model.module.buffers():
            dist.broadcast(buffer, 0)
    return model.module


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, dataset: Dataset, batches: int, batch_size: int,
                          device: torch.device, channels_last: bool = False) -> None:
    """Re-estimate every BatchNorm's running statistics from the first ``batches`` batches.

    The statistics become plain averages over those batches under the current weights
    (``torch.optim.swa_utils.update_bn``). Every rank reads the same batches, so the
    statistics agree across a distributed run.
    """
    loader = DataLoader(dataset, batch_size=batch_size)
    first = (images for i, (images, _) in enumerate(loader) if i < batches)
    was_training = model.training
    torch.optim.swa_utils.update_bn(
        (x.contiguous(memory_format=torch.channels_last) if channels_last else x
         for x in first), model, device=device)
    model.train(was_training)
