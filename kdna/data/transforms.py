"""The image transforms of :func:`kdna.data.load_data`: every item becomes a normalised float32
``[channels, size, size]`` tensor.

Small images (the offline sets, CIFAR-10) go through :class:`SmallImages`: one resize, with the
training augmentation folded into the same resampling. Photos get ImageNet-style random crops
and flips for training, and a resize and centre crop for evaluation. :class:`Channels` then
repeats grey images to three channels or averages colour to one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms import v2

__all__ = ["Channels", "SmallImages", "image_transform"]


class Channels:
    """Repeat a grey image to 3 channels, or average colour to 1 (as ``v2.Grayscale``)."""

    def __init__(self, channels: int) -> None:
        self.channels = channels

    def __call__(self, image: Tensor) -> Tensor:
        if image.shape[-3] == self.channels:
            return image
        if self.channels == 3:
            return image.expand(3, -1, -1)
        return v2.functional.rgb_to_grayscale(image)


class SmallImages:
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


def image_transform(train: bool, *, small: bool, flip: bool, size: int, channels: int,
                    mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    """Small images: see :class:`SmallImages`. Photos: ImageNet-style crops and (where
    ``flip``) flips. Then
    ``channels`` channels (:class:`Channels`), normalised with ``mean`` and ``std``."""
    if small:
        steps = [SmallImages(size, train, flip)]
    elif train:
        steps = [v2.ToImage(), v2.RandomResizedCrop(size),
                 *([v2.RandomHorizontalFlip()] if flip else [])]
    else:
        steps = [v2.ToImage(), v2.Resize(int(size / 0.875)), v2.CenterCrop(size)]
    return v2.Compose([*steps, Channels(channels), v2.ToDtype(torch.float32, scale=True),
                       v2.Normalize(mean, std), v2.ToPureTensor()])
