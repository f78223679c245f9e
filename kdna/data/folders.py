"""Folders of images in the layouts people keep them in, read as ImageFolder data sets.

A folder holds one folder of images per class (``<root>/<class>/<image>``), or split folders
that each hold the same class folders: ``train/`` and ``val/``, ``train/`` and ``test/``, or
all three (the layout of downloaded data sets). :func:`read_folder` returns the splits that are
there; :func:`kdna.data.load_data` carves a missing validation split out of ``train/`` and
leaves a missing test split out. Hidden folders (``.ipynb_checkpoints``) are never classes.

Every mistake is a ``ValueError`` that names the folder and what is expected: a single class,
class folders that differ between splits, an empty class folder, a validation or test folder
without ``train/``, a folder beside ``train/`` that is not a split (``valid/`` is not read as
``val/``: it would be ignored in silence otherwise). ``train/`` alone is read as class folders.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision import datasets
from torchvision.datasets.folder import IMG_EXTENSIONS

from kdna.data.imagefiles import drop_bad_images, read_image

__all__ = ["LAYOUT", "SPLIT_FOLDERS", "FolderSplits", "folder_layout", "read_folder"]

SPLIT_FOLDERS = ("train", "val", "test")
LAYOUT = ("an image folder in one of these layouts: one folder of images per class "
          "(<root>/<class>/<image>), or train/ with val/, test/ or both, each holding the same "
          "class folders (<root>/train/<class>/<image>)")


@dataclass
class FolderSplits:
    """The splits a folder holds: ImageFolder data sets, ``None`` where a split is absent
    (a folder of class folders alone is all ``train``)."""

    train: datasets.ImageFolder
    val: datasets.ImageFolder | None
    test: datasets.ImageFolder | None
    classes: list[str]
    split_folders: bool  # train/ (and val/ or test/), rather than class folders alone


def _visible_folders(path: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


def folder_layout(path: Path) -> dict[str, Path | None]:
    """``{"train": ..., "val": ..., "test": ...}``: the folder of each split, ``None`` where it
    is absent; class folders alone are all ``train``."""
    if not path.is_dir():
        raise ValueError(f"{str(path)!r} is a file; expected {LAYOUT}")
    folders = _visible_folders(path)
    present = [name for name in SPLIT_FOLDERS if name in folders]
    if not present:
        return {"train": path, "val": None, "test": None}
    if "train" not in present:
        there = " and ".join(f"{name}/" for name in present)
        raise ValueError(f"{str(path)!r} has {there} but no train/ folder; expected {LAYOUT}")
    others = [name for name in folders if name not in SPLIT_FOLDERS]
    if others:
        raise ValueError(f"{str(path)!r} has train/ beside {others}, which are not split folders "
                         f"(train, val, test); expected {LAYOUT}")
    return {name: path / name if name in present else None for name in SPLIT_FOLDERS}


def _check_classes(path: Path, found: dict[Path, list[str]]) -> list[str]:
    """The class names every split folder shares; a ``ValueError`` when they differ or are too
    few."""
    for folder, classes in found.items():
        if not classes:
            raise ValueError(f"no class folder in {str(folder)!r}; expected {LAYOUT}")
    every = sorted(set().union(*found.values()))
    missing = {folder: [c for c in every if c not in classes] for folder, classes in found.items()}
    if any(missing.values()):
        lacks = "; ".join(f"{folder.name}/ lacks {gone}" for folder, gone in missing.items()
                          if gone)
        raise ValueError(f"{str(path)!r}: the splits hold different class folders: {lacks}; "
                         f"every split must hold the same class folders")
    if len(every) < 2:
        raise ValueError(f"{str(path)!r} has a single class folder, {every[0]!r}; a classifier "
                         f"needs at least 2 classes, one folder of images each ({LAYOUT})")
    return every


class _ImageFolder(datasets.ImageFolder):
    """ImageFolder that skips hidden folders as classes (``.ipynb_checkpoints`` is not one)."""

    def find_classes(self, directory):
        classes = _visible_folders(Path(directory))
        return classes, {name: i for i, name in enumerate(classes)}


def _image_folder(directory: Path, bad_images: str) -> datasets.ImageFolder:
    """The ImageFolder of ``directory``, without the files in hidden folders and the hidden
    files (as :func:`kdna.data.keys.folder_key` leaves them out); a ``ValueError`` names its
    class folders with no (readable) image."""
    folder = _ImageFolder(directory, loader=read_image, allow_empty=True)
    shown = [s for s in folder.samples  # not cat/.ipynb_checkpoints/..., cat/.thumbs/...
             if not any(part.startswith(".") for part in Path(s[0]).relative_to(directory).parts)]
    if len(shown) < len(folder.samples):
        folder.samples = folder.imgs = shown
        folder.targets = [t for _, t in shown]
    if bad_images == "skip":
        drop_bad_images(folder)
    counts = torch.bincount(torch.as_tensor(folder.targets, dtype=torch.long),
                            minlength=len(folder.classes)).tolist()
    empty = [c for c, n in zip(folder.classes, counts, strict=True) if n == 0]
    if empty:
        readable = "readable " if bad_images == "skip" else ""
        raise ValueError(f"class folder(s) {empty} of {str(directory)!r} hold no {readable}image "
                         f"(files ending in {', '.join(IMG_EXTENSIONS)}); every class folder "
                         f"needs images, or remove it")
    return folder


def read_folder(path: Path, bad_images: str = "error") -> FolderSplits:
    """The splits of the folder ``path`` (module docstring), each an ImageFolder whose loader
    is :func:`kdna.data.imagefiles.read_image`; ``bad_images="skip"`` reads every image now
    and leaves the unreadable ones out (:func:`kdna.data.imagefiles.drop_bad_images`)."""
    layout = folder_layout(path)
    there = {name: folder for name, folder in layout.items() if folder is not None}
    classes = _check_classes(path, {folder: _visible_folders(folder) for folder in there.values()})
    read = {name: _image_folder(folder, bad_images) for name, folder in there.items()}
    return FolderSplits(train=read["train"], val=read.get("val"), test=read.get("test"),
                        classes=classes, split_folders=layout["train"] != path)
