"""Image files that cannot be read: named with their path and the reason, found before they
stop an epoch.

* :func:`read_image` is the loader of every ImageFolder :func:`kdna.data.load_data` reads: a
  corrupt, truncated or empty file raises :class:`BadImageError` naming the file and why,
  instead of PIL's ``OSError: Truncated File Read`` that names nothing.
* :func:`scan_images` reads every image of a folder once (a progress bar) and lists the bad
  ones; ``kdna check-data PATH`` prints that list, and ``load_data(..., bad_images="skip")``
  leaves them out with one warning.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS
from tqdm.auto import tqdm

__all__ = ["BadImageError", "drop_bad_images", "image_files", "read_image", "scan_images"]


class BadImageError(ValueError):
    """An image file that cannot be decoded; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: str | Path, reason: str | None = None) -> None:
        self.path, self.reason = str(path), reason
        # one argument: the message of a DataLoader worker's error, re-raised as it was
        super().__init__(self.path if reason is None else f"cannot read image {self.path!r}: "
                                                          f"{reason}")

    def __reduce__(self):  # DataLoader workers send it to the main process
        return (BadImageError, (self.path, self.reason))


def _reason(exc: BaseException, path: Path) -> str:
    try:
        if path.stat().st_size == 0:
            return "the file is empty (0 bytes)"
    except OSError:
        pass
    return f"{type(exc).__name__}: {exc}"


def read_image(path: str | Path) -> Image.Image:
    """The image at ``path`` as RGB, fully decoded; :class:`BadImageError` if it cannot be."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise BadImageError(path, _reason(exc, path)) from exc


def image_files(folder: str | Path) -> list[Path]:
    """Every file under ``folder`` that an ImageFolder would read (hidden folders skipped)."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(root, f) for f in sorted(files) if f.lower().endswith(IMG_EXTENSIONS)]
    return found


def scan_images(folder: str | Path | list, *, progress: bool = True) -> list[tuple[str, str]]:
    """``(path, reason)`` for every image under ``folder`` (or in a list of paths) that cannot
    be read, each decoded in full once."""
    if isinstance(folder, list):
        files = [Path(f) for f in folder]
    else:
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"image folder {str(folder)!r} does not exist or is not a "
                                    f"folder")
        files = image_files(folder)
    bad = []
    for path in tqdm(files, desc="checking images", unit="image", disable=not progress):
        try:
            read_image(path)
        except BadImageError as exc:
            bad.append((exc.path, exc.reason))
    return bad


def drop_bad_images(dataset, *, progress: bool = False) -> list[tuple[str, str]]:
    """Remove the unreadable images from an ImageFolder ``dataset`` in place, with one warning
    that gives their count and the first paths; returns them."""
    bad = scan_images([path for path, _ in dataset.samples], progress=progress)
    if bad:
        gone = {path for path, _ in bad}
        dataset.samples = [s for s in dataset.samples if str(s[0]) not in gone]
        dataset.imgs, dataset.targets = dataset.samples, [t for _, t in dataset.samples]
        first = "; ".join(f"{p} ({r})" for p, r in bad[:3])
        warnings.warn(f"skipped {len(bad)} unreadable image(s) of {dataset.root}: {first}"
                      f"{' ...' if len(bad) > 3 else ''}", stacklevel=3)
    return bad
