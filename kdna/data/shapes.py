"""Detection and segmentation data: synthetic shapes (offline) and Penn-Fudan (online).

:class:`ShapesDataset` draws coloured shapes (circles, squares, triangles, crosses) of random
sizes and colours on textured backgrounds (noise, gradients, stripes), deterministically from
``seed`` and the item's index, so any item can be read in any order. Later shapes cover
earlier ones: each instance's mask is its *visible* part, its box is that mask's extent, and a
placement that would hide more than half of an earlier shape is drawn again elsewhere (or the
image keeps fewer shapes), so every target stays valid. Items use torchvision's detection
format::

    image  float32 [3, H, W] in [0, 1]
    target {"boxes": float32 [N, 4] xyxy in pixels (x2, y2 exclusive: a box covers pixels
            x1 <= x < x2), "labels": int64 [N] in 1..K (0 is the background),
            "masks": uint8 [N, H, W]}

:meth:`ShapesDataset.segmentation` gives the semantic view ``(image, int64 [H, W] class map)``
for a segmenter, and :func:`collate` batches detection items as lists, the way torchvision's
detectors take them. :func:`penn_fudan` loads the Penn-Fudan pedestrians (170 photos, masks
of 423 people) in the same format; it downloads once to the cache root
(:func:`kdna.data.cache.cache_root`, ``$KDNA_CACHE`` or ``~/.cache/kdna``) and fails at once,
naming this offline set, when the host cannot be reached.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from kdna._checks import int_at_least
from kdna._extras import require
from kdna.data.cache import resolve_root
from kdna.data.online import require_online

__all__ = ["SHAPES", "PennFudan", "SegmentationView", "ShapesDataset", "collate", "penn_fudan"]

SHAPES = ("circle", "square", "triangle", "cross")
BACKGROUNDS = ("noise", "gradient", "stripes")
PENN_FUDAN_URL = "https://www.cis.upenn.edu/~jshi/ped_html/PennFudanPed.zip"
OFFLINE = "kdna.data.shapes.ShapesDataset(...), synthetic shapes generated offline from a seed"
_MIN_VISIBLE = 0.5  # an earlier shape must keep this share of its pixels visible
_TRIES = 20  # placements tried per shape before the image keeps fewer shapes


def _shape_mask(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A boolean ``[size, size]`` footprint of one shape (its extent fills the square)."""
    draw = require("skimage.draw", None, "kdna.data.shapes")  # scikit-image: a core dependency
    mask = np.zeros((size, size), bool)
    r = (size - 1) / 2
    if kind == "circle":
        mask[draw.disk((r, r), size / 2, shape=mask.shape)] = True
    elif kind == "square":
        mask[:] = True
    elif kind == "triangle":
        top = rng.uniform(0, size - 1)  # apex anywhere along the top edge
        mask[draw.polygon([size - 1, 0, size - 1], [0, top, size - 1], shape=mask.shape)] = True
        mask[-1, :] = True
    else:  # cross: two bars a third of the side thick
        third = max(1, round(size / 3))
        lo = (size - third) // 2
        mask[lo:lo + third, :] = True
        mask[:, lo:lo + third] = True
    return mask


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    """A textured float32 ``[size, size, 3]`` background in [0, 1]."""
    kind = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    base = rng.uniform(0.2, 0.8, 3).astype(np.float32)
    if kind == "noise":
        image = base + rng.normal(0, 0.12, (size, size, 3)).astype(np.float32)
    else:
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
        angle = rng.uniform(0, np.pi)
        ramp = np.cos(angle) * xx + np.sin(angle) * yy
        if kind == "stripes":
            ramp = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(3, 8) * ramp)
        other = rng.uniform(0.2, 0.8, 3).astype(np.float32)
        image = base + (other - base) * ramp[..., None]
        image = image + rng.normal(0, 0.03, (size, size, 3)).astype(np.float32)
    return np.clip(image, 0, 1).astype(np.float32)


class ShapesDataset(Dataset):
    """Synthetic shapes for detection and instance segmentation (see the module docstring).

    Args:
        length: number of images.
        image_size: side of the square images (at least 32).
        classes: which shapes to draw, a non-empty subset of :data:`SHAPES`; label ``k + 1``
            is ``classes[k]``.
        objects: ``(min, max)`` shapes per image (at least one each); an image keeps fewer
            when no placement leaves the shapes under it at least half visible.
        object_size: ``(min, max)`` side of a shape's square extent in pixels.
        seed: fixes every image: item ``i`` depends only on ``(seed, i)``.
    """

    def __init__(self, length: int = 256, *, image_size: int = 128,
                 classes: Sequence[str] = SHAPES, objects: tuple[int, int] = (1, 4),
                 object_size: tuple[int, int] | None = None, seed: int = 0) -> None:
        self.length = int_at_least("length", length, 1)
        self.image_size = int_at_least("image_size", image_size, 32)
        if isinstance(classes, str) or not classes or len(set(classes)) != len(classes) or any(
                c not in SHAPES for c in classes):
            raise ValueError(f"classes must be distinct names from {SHAPES}, got {classes!r}")
        self.classes = list(classes)
        if (not isinstance(objects, tuple | list) or len(objects) != 2
                or int_at_least("objects[0]", objects[0], 1)
                > int_at_least("objects[1]", objects[1], 1)):
            raise ValueError(f"objects must be (min, max) with 1 <= min <= max, got {objects!r}")
        self.objects = (int(objects[0]), int(objects[1]))
        if object_size is None:
            object_size = (max(8, self.image_size // 8), max(8, self.image_size // 8) * 3)
        if (not isinstance(object_size, tuple | list) or len(object_size) != 2
                or int_at_least("object_size[0]", object_size[0], 4) > object_size[1]
                or int_at_least("object_size[1]", object_size[1], 4) > self.image_size):
            raise ValueError(f"object_size must be (min, max) with 4 <= min <= max <= image_size "
                             f"({self.image_size}), got {object_size!r}")
        self.object_size = (int(object_size[0]), int(object_size[1]))
        self.seed = int_at_least("seed", seed, 0)

    @property
    def num_classes(self) -> int:
        """Number of classes a model needs, background included (``len(classes) + 1``)."""
        return len(self.classes) + 1

    def __len__(self) -> int:
        return self.length

    def _draw(self, image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, list[int]]:
        """Paint shapes one over another on ``image`` (in place); return the visible masks
        ``[N, H, W]`` and the labels."""
        size = self.image_size
        wanted = int(rng.integers(self.objects[0], self.objects[1] + 1))
        full: list[np.ndarray] = []
        visible: list[np.ndarray] = []
        labels: list[int] = []
        for _ in range(wanted):
            label = int(rng.integers(len(self.classes)))
            side = int(rng.integers(self.object_size[0], self.object_size[1] + 1))
            footprint = _shape_mask(self.classes[label], side, rng)
            if rng.random() < 0.5:
                footprint = footprint[::-1]  # triangles point up or down
            for _ in range(_TRIES):
                y, x = rng.integers(0, size - side + 1, 2)
                mask = np.zeros((size, size), bool)
                mask[y:y + side, x:x + side] = footprint
                if all((v & ~mask).sum() >= _MIN_VISIBLE * f.sum()
                       for v, f in zip(visible, full, strict=True)):
                    break
            else:
                break  # nowhere to put it: this image keeps fewer shapes
            under = image[mask].mean(axis=0)
            for _ in range(_TRIES):  # a colour that stands out from what it covers
                colour = rng.uniform(0, 1, 3).astype(np.float32)
                if np.abs(colour - under).max() > 0.3:
                    break
            shade = colour + rng.normal(0, 0.04, (int(mask.sum()), 3)).astype(np.float32)
            image[mask] = np.clip(shade, 0, 1)
            visible = [v & ~mask for v in visible]
            visible.append(mask)
            full.append(mask)
            labels.append(label + 1)
        masks = np.stack(visible) if visible else np.zeros((0, size, size), bool)
        return masks, labels

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        if isinstance(index, bool) or not isinstance(index, int | np.integer):
            raise TypeError(f"index must be an integer, got {type(index).__name__}")
        if not -self.length <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} images")
        index = int(index) % self.length
        rng = np.random.default_rng([self.seed, index])
        image = _background(self.image_size, rng)
        masks, labels = self._draw(image, rng)
        return torch.from_numpy(image).permute(2, 0, 1).contiguous(), _target(masks, labels)

    def segmentation(self) -> SegmentationView:
        """The semantic-segmentation view: items ``(image, int64 [H, W] class map)``."""
        return SegmentationView(self)

    def __repr__(self) -> str:
        return (f"ShapesDataset(length={self.length}, image_size={self.image_size}, "
                f"classes={self.classes}, objects={self.objects}, "
                f"object_size={self.object_size}, seed={self.seed})")


def _target(masks: np.ndarray, labels: Sequence[int]) -> dict[str, Tensor]:
    """torchvision's target dict from boolean instance masks ``[N, H, W]``."""
    boxes = np.zeros((len(masks), 4), np.float32)
    for i, mask in enumerate(masks):
        ys, xs = np.nonzero(mask)
        boxes[i] = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    return {"boxes": torch.from_numpy(boxes),
            "labels": torch.as_tensor(list(labels), dtype=torch.int64),
            "masks": torch.from_numpy(masks.astype(np.uint8))}


class SegmentationView(Dataset):
    """Semantic segmentation on a detection set: ``(image, int64 [H, W] class map)``, where a
    pixel holds the label of the instance visible there and 0 elsewhere."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image, target = self.base[index]
        classes = torch.zeros(image.shape[1:], dtype=torch.int64)
        for mask, label in zip(target["masks"], target["labels"], strict=True):
            classes[mask.bool()] = label
        return image, classes


def collate(batch: Sequence[tuple[Tensor, dict[str, Tensor]]]
            ) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
    """Batch detection items as ``(images, targets)`` lists (images may differ in size)."""
    images, targets = zip(*batch, strict=True) if batch else ((), ())
    return list(images), list(targets)


class PennFudan(Dataset):
    """The Penn-Fudan pedestrians in an extracted ``PennFudanPed`` folder, as detection items
    (one class, label 1 = person). Use :func:`penn_fudan` to download it."""

    num_classes = 2  # background and person

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.classes = ["person"]
        self.images = sorted((self.root / "PNGImages").glob("*.png"))
        if not self.images:
            raise FileNotFoundError(f"no PNGImages/*.png under {str(self.root)!r}; expected the "
                                    "extracted PennFudanPed folder (use "
                                    "kdna.data.shapes.penn_fudan)")

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        path = self.images[index]
        image = np.asarray(Image.open(path).convert("RGB"), np.float32) / 255
        ids = np.asarray(Image.open(self.root / "PedMasks" / f"{path.stem}_mask.png"))
        masks = np.stack([ids == i for i in np.unique(ids) if i != 0])
        return (torch.from_numpy(image).permute(2, 0, 1).contiguous(),
                _target(masks, [1] * len(masks)))


def penn_fudan(root: str | Path | None = None, *, download: bool = True) -> PennFudan:
    """The Penn-Fudan pedestrian set (Wang, Shi et al., 2007), cached under ``root``
    (``None``: :func:`kdna.data.cache.cache_root`).

    The first call downloads and extracts ``PennFudanPed.zip`` (53 MB) when ``download`` is
    true; offline, it fails at once with a ``ConnectionError`` that names the synthetic set.
    """
    root = resolve_root(root)
    folder = root / "PennFudanPed"
    if not (folder / "PNGImages").is_dir():
        if not download:
            raise FileNotFoundError(f"Penn-Fudan is not cached under {str(root)!r}; pass "
                                    f"download=True, or use {OFFLINE}")
        require_online(PENN_FUDAN_URL, what="data set 'penn_fudan'", offline=OFFLINE,
                       cached=folder / "PNGImages")
        from torchvision.datasets.utils import download_and_extract_archive

        download_and_extract_archive(PENN_FUDAN_URL, str(root))
    return PennFudan(folder)
