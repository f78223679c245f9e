"""Figures for a fine-tuning run: the images it learns from, its training curves, its confusion
matrix and its most confident mistakes. Each returns a titled ``go.Figure`` with labelled axes.

Data sets hold images as the network takes them (resized, normalised tensors); :func:`pictures`
undoes the normalisation, so the figures show what the network sees.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from kdna._checks import positive_int
from kdna._extras import require
from kdna.viz.figures import image_predictions

go = require("plotly.graph_objects", "viz", "kdna.viz")  # ImportError naming kdna[viz]
make_subplots = require("plotly.subplots", "viz", "kdna.viz").make_subplots

__all__ = ["confident_mistakes", "confusion_heatmap", "image_grid", "mistakes_grid", "pictures",
           "training_curves"]

_CURVES = (("loss", "cross-entropy loss", 1.0), ("top1", "top-1 accuracy (%)", 100.0))


def pictures(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> list[np.ndarray]:
    """Normalised images ``[N, C, H, W]`` (or one ``[C, H, W]``) back to HWC uint8 arrays:
    ``x * std + mean``, clipped to [0, 1]; one channel gives HW arrays."""
    images = images.detach().float().cpu()
    if images.dim() == 3:
        images = images[None]
    if images.dim() != 4 or images.shape[1] not in (1, 3) or not (
            len(mean) == len(std) == images.shape[1]):
        raise ValueError(f"images must be [N, C, H, W] with C = 1 or 3 and one mean and std per "
                         f"channel, got shape {list(images.shape)}, {len(mean)} means and "
                         f"{len(std)} stds")
    scale = torch.tensor(std, dtype=torch.float32)[None, :, None, None]
    shift = torch.tensor(mean, dtype=torch.float32)[None, :, None, None]
    pixels = ((images * scale + shift).clamp(0, 1) * 255).round().to(torch.uint8)
    arrays = pixels.permute(0, 2, 3, 1).numpy()
    return [a[..., 0] if a.shape[-1] == 1 else a for a in arrays]


def _enlarged(image: np.ndarray, size: int) -> np.ndarray:
    """Small images enlarged by a whole factor (nearest pixel) to about ``size``, so that a
    32-pixel digit stays sharp on screen; larger ones as they are."""
    factor = size // max(image.shape[:2])
    if factor < 2:
        return image
    height, width = image.shape[:2]
    return np.asarray(Image.fromarray(image).resize((width * factor, height * factor),
                                                    Image.NEAREST))


def _grid(images: list[np.ndarray], captions: list[str], title: str, cols: int,
          size: int) -> go.Figure:
    fig = image_predictions([_enlarged(im, size) for im in images], captions, title=title,
                            cols=cols, size=size)
    lines = max(caption.count("<br>") + 1 for caption in captions)
    fig.update_layout(height=-(-len(images) // cols) * (size + 40 + 20 * lines) + 120,
                      margin={"t": 100})
    return fig


def image_grid(dataset: Dataset, *, classes: Sequence[str], mean: Sequence[float],
               std: Sequence[float], indices: Sequence[int] | None = None, count: int = 16,
               cols: int = 8, size: int = 96, title: str = "Images and their labels"
               ) -> go.Figure:
    """Items of ``dataset`` (``(normalised image, label)``) in a grid, each under its class
    name: ``indices``, or the first ``count`` items (a kdna split interleaves its classes, so
    they show every class in proportion)."""
    chosen = list(range(min(positive_int("count", count), len(dataset)))) if indices is None \
        else [int(i) for i in indices]
    if not chosen:
        raise ValueError("image_grid needs at least one image")
    items = [dataset[i] for i in chosen]
    images = pictures(torch.stack([x for x, _ in items]), mean, std)
    return _grid(images, [str(classes[int(y)]) for _, y in items], title, cols, size)


def _curve_sets(history) -> dict[str, Sequence[Mapping[str, float]]]:
    sets = dict(history) if isinstance(history, Mapping) else {"": history}
    if not sets or any(not rows for rows in sets.values()):
        raise ValueError("training_curves needs at least one history row per run")
    return sets


def training_curves(history: Sequence[Mapping[str, float]]
                    | Mapping[str, Sequence[Mapping[str, float]]], *,
                    title: str = "Training curves") -> go.Figure:
    """Loss (left) and top-1 accuracy (right) against the optimizer step, on the training
    batches (dotted) and on the validation split (solid), from a fit history (one row per
    pass, with ``step``, ``train_loss``, ``train_top1`` and, where validation ran,
    ``val_loss``, ``val_top1``). Several runs: a mapping of run name to history."""
    sets = _curve_sets(history)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Loss", "Accuracy"),
                        horizontal_spacing=0.1)
    palette = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd")
    for k, (run, rows) in enumerate(sets.items()):
        steps = [row["step"] for row in rows]
        for col, (metric, _, scale) in enumerate(_CURVES, 1):
            for split, dash in (("train", "dot"), ("val", "solid")):
                key = f"{split}_{metric}"
                if not all(key in row for row in rows):
                    continue
                name = f"{run}, {split}" if run else ("training batches" if split == "train"
                                                      else "validation")
                fig.add_trace(go.Scatter(
                    x=steps, y=[scale * row[key] for row in rows], mode="lines+markers",
                    name=name, legendgroup=name, showlegend=col == 1,
                    line={"dash": dash, "color": palette[k % len(palette)]},
                    hovertemplate=f"step %{{x}}: %{{y:.3f}}<extra>{name}</extra>"),
                    row=1, col=col)
    for col, (_, label, _) in enumerate(_CURVES, 1):
        fig.update_xaxes(title_text="optimizer step", row=1, col=col)
        fig.update_yaxes(title_text=label, row=1, col=col)
    fig.update_layout(title=title, height=400)
    return fig


def confusion_heatmap(matrix: Tensor, classes: Sequence[str], *,
                      title: str = "Confusion matrix") -> go.Figure:
    """A confusion matrix ``[classes, classes]`` (rows: true class, columns: predicted class,
    :class:`kdna.train.evaluate.Metrics`' ``confusion``) as a heatmap: each cell coloured by
    its share of the row (so classes of any size compare) and labelled with its count."""
    counts = torch.as_tensor(matrix).detach().cpu()
    n = len(classes)
    if tuple(counts.shape) != (n, n):
        raise ValueError(f"a confusion matrix for {n} classes must be {n}x{n}, got "
                         f"{list(counts.shape)}")
    shares = counts.double() / counts.sum(dim=1, keepdim=True).clamp(min=1)
    names = [str(c) for c in classes]
    fig = go.Figure(go.Heatmap(
        z=shares.numpy(), x=names, y=names, text=counts.long().numpy(), zmin=0, zmax=1,
        texttemplate="%{text}" if n <= 30 else None, colorscale="Blues",
        colorbar={"title": {"text": "share of the row"}},
        hovertemplate="true %{y}, predicted %{x}: %{text} (%{z:.0%} of the row)<extra></extra>"))
    fig.update_xaxes(title_text="predicted class", type="category", side="bottom")
    fig.update_yaxes(title_text="true class", type="category", autorange="reversed")
    side = max(420, min(900, 28 * n + 200))
    fig.update_layout(title=title, width=side + 80, height=side)
    return fig


def confident_mistakes(probabilities: Tensor, labels: Tensor, count: int = 8) -> list[int]:
    """The indices of at most ``count`` wrong predictions, most confident first: the items
    whose arg-max class is not their label, ordered by that class's probability."""
    probabilities, labels = torch.as_tensor(probabilities), torch.as_tensor(labels)
    if probabilities.dim() != 2 or labels.shape != probabilities.shape[:1]:
        raise ValueError(f"need probabilities [N, classes] and labels [N], got shapes "
                         f"{list(probabilities.shape)} and {list(labels.shape)}")
    confidence, predicted = probabilities.max(dim=1)
    wrong = torch.nonzero(predicted != labels).flatten()
    order = torch.argsort(confidence[wrong], descending=True, stable=True)
    return wrong[order][: positive_int("count", count)].tolist()


def mistakes_grid(dataset: Dataset, probabilities: Tensor, labels: Tensor, *,
                  classes: Sequence[str], mean: Sequence[float], std: Sequence[float],
                  count: int = 8, cols: int = 4, size: int = 96,
                  title: str = "The most confident mistakes") -> go.Figure:
    """The most confident wrong predictions on ``dataset`` (:func:`confident_mistakes`, with
    ``probabilities`` ``[len(dataset), classes]`` and ``labels`` ``[len(dataset)]`` in item
    order), each image under its true and predicted class and that prediction's probability.
    No mistake: a figure that says so."""
    if len(probabilities) != len(dataset):
        raise ValueError(f"need one row of probabilities per item: {len(probabilities)} rows "
                         f"for {len(dataset)} items")
    chosen = confident_mistakes(probabilities, labels, count)
    if not chosen:
        fig = go.Figure()
        fig.add_annotation(text="no mistakes: every image is predicted right", showarrow=False)
        fig.update_xaxes(visible=False)
        fig.update_yaxes(visible=False)
        fig.update_layout(title=title, height=200)
        return fig
    images = pictures(torch.stack([dataset[i][0] for i in chosen]), mean, std)
    captions = [f"true {classes[int(labels[i])]}<br>predicted "
                f"{classes[int(probabilities[i].argmax())]} ({probabilities[i].max():.0%})"
                for i in chosen]
    return _grid(images, captions, title, cols, size)
