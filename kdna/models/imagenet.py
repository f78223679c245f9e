"""The 1000 ImageNet-1k class names, in class-index order, from torchvision (no download)."""

from __future__ import annotations

from functools import cache

from torchvision.models import ResNet18_Weights

__all__ = ["imagenet_categories"]


@cache
def _categories() -> tuple[str, ...]:
    # Weight metadata ships inside torchvision; reading it fetches nothing.
    return tuple(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def imagenet_categories() -> list[str]:
    """ImageNet-1k class names: ``imagenet_categories()[967] == "espresso"``."""
    return list(_categories())
