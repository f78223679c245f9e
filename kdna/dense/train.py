"""Training and metrics for the dense models of :mod:`kdna.dense`.

:func:`train_dense` runs a fixed number of optimiser steps over a loader, cycling it, and
returns each step's loss. It tells the task from the batch: a detection batch is
``(list of images, list of target dicts)`` (see :func:`kdna.data.shapes.collate`), and the model
returns its loss dict in train mode; a segmentation batch is ``(images [B, 3, H, W], class
maps [B, H, W])``, and the loss is the cross-entropy of ``model(images)["out"]`` (pixels
labelled ``ignore_index`` do not count).

:func:`evaluate_detection` (COCO box mAP, and mask mAP for a model that predicts masks,
through torchmetrics' ``MeanAveragePrecision`` on pycocotools) and
:func:`evaluate_segmentation` (mean IoU over the classes present, and pixel accuracy,
through torchmetrics) return plain floats in [0, 1].

The optimiser and the warm-up + cosine schedule are :mod:`kdna.train.schedule`'s, the same as
the classification loop's. Keywords follow the project's vocabulary: ``progress`` (show a
progress bar) and ``grad_clip``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from kdna._checks import int_at_least, positive_float, positive_int
from kdna._extras import require
from kdna.nn.utils import device_of, eval_mode
from kdna.train.schedule import build_optimizer, warmup_cosine

__all__ = ["evaluate_detection", "evaluate_segmentation", "train_dense"]

def _is_detection(batch: object) -> bool:
    if not (isinstance(batch, tuple | list) and len(batch) == 2):
        raise TypeError("a batch must be (images, targets): lists of image tensors and target "
                        "dicts for detection, or tensors [B, 3, H, W] and [B, H, W] for "
                        f"segmentation; got {type(batch).__name__}")
    images, targets = batch
    if isinstance(images, Tensor) and isinstance(targets, Tensor):
        return False
    if isinstance(images, tuple | list) and all(isinstance(t, dict) for t in targets):
        return True
    raise TypeError(f"a batch must hold image and target lists (detection) or two tensors "
                    f"(segmentation), got {type(images).__name__} and {type(targets).__name__}")


def _to(batch: tuple, device: torch.device, detection: bool) -> tuple:
    images, targets = batch
    if detection:
        return ([image.to(device) for image in images],
                [{k: v.to(device) for k, v in t.items()} for t in targets])
    return images.to(device), targets.to(device)


def _cycle(loader: Iterable) -> Iterator:
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("the loader yielded no batch")


def _segmentation_loss(out: dict[str, Tensor], targets: Tensor, ignore_index: int) -> Tensor:
    loss = F.cross_entropy(out["out"], targets, ignore_index=ignore_index)
    if "aux" in out:  # torchvision's reference weighs the auxiliary head by 0.5
        loss = loss + 0.5 * F.cross_entropy(out["aux"], targets, ignore_index=ignore_index)
    return loss


def train_dense(model: nn.Module, loader: Iterable, steps: int, lr: float = 1e-3, *,
                optimizer: str = "adamw", weight_decay: float = 1e-4, momentum: float = 0.9,
                warmup_steps: int = 0, cosine: bool = True, grad_clip: float | None = 10.0,
                ignore_index: int = 255, device: torch.device | str | None = None,
                progress: bool = True) -> list[float]:
    """Train ``model`` for ``steps`` optimiser steps on ``loader`` (cycled); per-step losses.

    Args:
        lr, optimizer, weight_decay, momentum: AdamW (default; betas ``(momentum, 0.999)``)
            or SGD with momentum, over the parameters that require grad
            (:func:`kdna.train.schedule.build_optimizer`).
        warmup_steps, cosine: ``warmup_steps`` steps of linear warm-up, then the learning
            rate decays to 0 along a cosine (``cosine=True``) or stays at ``lr``
            (:func:`kdna.train.schedule.warmup_cosine`).
        grad_clip: clip the gradients' global norm to this (``None``: no clipping);
            detectors trained from scratch have occasional large gradients early on.
        ignore_index: segmentation pixels with this label do not count.
        device: where to train (default: where the model is).
        progress: show a tqdm progress bar.

    Raises:
        FloatingPointError: a loss that is not finite (the learning rate is too high).
    """
    steps, lr = positive_int("steps", steps), positive_float("lr", lr)
    warmup_steps = int_at_least("warmup_steps", warmup_steps, 0)
    if device is not None:
        model.to(device)
    device = device_of(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = build_optimizer(params, optimizer, lr=lr, momentum=momentum, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(steps, warmup_steps,
                                                                    cosine=cosine))
    model.train()
    losses: list[float] = []
    batches = _cycle(loader)
    for step in tqdm(range(steps), desc="train", leave=False, disable=not progress):
        loss = _dense_loss(model, next(batches), device, ignore_index)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"the loss became {loss.item()} at step {step}; "
                                     f"lower the learning rate (lr={lr})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(params, grad_clip)
        opt.step()
        schedule.step()
        losses.append(loss.item())
    return losses


def _dense_loss(model: nn.Module, batch: object, device: torch.device, ignore_index: int
                ) -> Tensor:
    """The training loss of one batch: the sum of a detector's loss dict, or a segmenter's
    cross-entropy (see :func:`_segmentation_loss`)."""
    detection = _is_detection(batch)
    images, targets = _to(batch, device, detection)
    if detection:
        return sum(model(images, targets).values())
    return _segmentation_loss(model(images), targets, ignore_index)


@torch.no_grad()
def evaluate_detection(model: nn.Module, loader: Iterable, *, progress: bool = False
                       ) -> dict[str, float]:
    """COCO mAP of a detector on ``loader`` (detection batches), in eval mode.

    Returns ``{"map", "map_50", "map_75"}`` for boxes, and ``{"mask_map", "mask_map_50",
    "mask_map_75"}`` too when the model predicts masks (thresholded at 0.5). A class with no
    ground truth in the whole loader does not count. ``progress`` shows a tqdm bar.
    """
    require("pycocotools", "dense", "evaluate_detection")  # torchmetrics' COCO backend
    MeanAveragePrecision = require(
        "torchmetrics.detection", "dense", "evaluate_detection").MeanAveragePrecision
    device = device_of(model)
    metric: MeanAveragePrecision | None = None
    with_masks = False
    with eval_mode(model):
        for batch in tqdm(loader, desc="evaluate", leave=False, disable=not progress):
            if not _is_detection(batch):
                raise TypeError("evaluate_detection needs detection batches (image and target "
                                "lists, kdna.data.shapes.collate); use evaluate_segmentation")
            images, targets = _to(batch, device, True)
            outputs = model(images)
            if metric is None:
                with_masks = "masks" in outputs[0] and all("masks" in t for t in targets)
                metric = MeanAveragePrecision(iou_type=("bbox", "segm") if with_masks
                                              else "bbox", backend="pycocotools")
            keys = ("boxes", "labels", "masks") if with_masks else ("boxes", "labels")
            preds = [{k: _mask(o[k]) if k == "masks" else o[k].cpu()
                      for k in (*keys, "scores")} for o in outputs]
            truth = [{k: _mask(t[k]) if k == "masks" else t[k].cpu() for k in keys}
                     for t in targets]
            metric.update(preds, truth)
    if metric is None:
        raise ValueError("the loader yielded no batch")
    result = metric.compute()
    names = ("map", "map_50", "map_75")
    scores = {name: float(result[f"bbox_{name}" if with_masks else name]) for name in names}
    if with_masks:
        scores |= {f"mask_{name}": float(result[f"segm_{name}"]) for name in names}
    # COCO reports -1 where nothing could be scored (no ground truth at all).
    return {k: max(v, 0.0) for k, v in scores.items()}


def _mask(masks: Tensor) -> Tensor:
    """Instance masks as bool ``[N, H, W]``: targets are uint8, predictions [N, 1, H, W]
    probabilities."""
    masks = masks.detach().cpu()
    if masks.dim() == 4:
        masks = masks[:, 0]
    return masks > 0.5 if masks.is_floating_point() else masks.bool()


@torch.no_grad()
def evaluate_segmentation(model: nn.Module, loader: Iterable, num_classes: int, *,
                          ignore_index: int = 255, progress: bool = False
                          ) -> dict[str, float]:
    """Mean IoU and pixel accuracy of a segmenter on ``loader`` (segmentation batches).

    ``miou``: torchmetrics' ``MulticlassJaccardIndex`` (macro average) over the
    ``num_classes`` classes, background included; a class absent from both the predictions
    and the labels does not count;
    ``pixel_accuracy``: the share of pixels labelled correctly. ``ignore_index`` pixels do
    not count in either. ``progress`` shows a tqdm bar.
    """
    int_at_least("num_classes", num_classes, 2)
    metrics = require("torchmetrics.classification", "dense", "evaluate_segmentation")
    MulticlassAccuracy, MulticlassJaccardIndex = (
        metrics.MulticlassAccuracy, metrics.MulticlassJaccardIndex)
    device = device_of(model)
    miou = MulticlassJaccardIndex(num_classes, average="macro", ignore_index=ignore_index)
    accuracy = MulticlassAccuracy(num_classes, average="micro", ignore_index=ignore_index)
    seen = False
    with eval_mode(model):
        for batch in tqdm(loader, desc="evaluate", leave=False, disable=not progress):
            if _is_detection(batch):
                raise TypeError("evaluate_segmentation needs segmentation batches (image and "
                                "class-map tensors); use evaluate_detection")
            images, targets = _to(batch, device, False)
            predicted = model(images)["out"].argmax(dim=1).cpu()
            miou.update(predicted, targets.cpu())
            accuracy.update(predicted, targets.cpu())
            seen = True
    if not seen:
        raise ValueError("the loader yielded no batch")
    return {"miou": float(miou.compute()),
            "pixel_accuracy": float(accuracy.compute())}
