"""Argument checks shared by every part of kdna: each raises a ``ValueError`` (or ``TypeError``)
whose message names the argument, the value given and what is expected.

The names are public (no leading underscore) so that any module may import them; the module
itself is private because users never need it.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Collection
from typing import TypeVar

__all__ = [
    "check_groups",
    "check_padding",
    "checked_replace",
    "instance_arg",
    "int_at_least",
    "module_arg",
    "non_negative_float",
    "one_of",
    "optional_positive_int",
    "pair",
    "path_arg",
    "positive_float",
    "positive_int",
    "tensor_arg",
]

T = TypeVar("T")


def int_at_least(name: str, value: object, low: int) -> int:
    """``value`` as an ``int`` if it is an integer (not a bool) of at least ``low``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an integer of at least {low}, got {value!r}")
    return int(value)


def positive_int(name: str, value: object) -> int:
    """``value`` if it is an integer of at least 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def positive_float(name: str, value: object) -> float:
    """``value`` as a ``float`` if it is a real number above 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def non_negative_float(name: str, value: object) -> float:
    """``value`` as a ``float`` if it is a real number of at least 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0:
        raise ValueError(f"{name} must be a number of at least 0, got {value!r}")
    return float(value)


def optional_positive_int(name: str, value: object) -> int | None:
    """``value`` if it is ``None`` or an integer of at least 1."""
    return None if value is None else positive_int(name, value)


def _kind(value: object) -> str:
    """How an error message names what was given: ``a str ('resnet18')``."""
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return f"a {type(value).__name__} ({shown})"


def instance_arg(name: str, value: T, kinds: type | tuple[type, ...], expected: str) -> T:
    """``value`` if it is an instance of ``kinds``; otherwise a ``TypeError`` that names the
    argument, what was given and ``expected`` (words: "a torch.nn.Module")."""
    if not isinstance(value, kinds):
        raise TypeError(f"{name} must be {expected}, got {_kind(value)}")
    return value


def module_arg(name: str, value: T) -> T:
    """``value`` if it is a ``torch.nn.Module`` (a string is a name, not a model)."""
    from torch import nn  # torch is always there; imported here to keep this module plain

    if isinstance(value, str) and not isinstance(value, nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got the string {value!r} (build "
                        f"the model first, e.g. kdna.create_model({value!r}))")
    return instance_arg(name, value, nn.Module, "a torch.nn.Module")


def tensor_arg(name: str, value: T) -> T:
    """``value`` if it is a ``torch.Tensor`` (a list or an array is not)."""
    import torch

    return instance_arg(name, value, torch.Tensor, "a torch.Tensor (torch.as_tensor makes one)")


def path_arg(name: str, value: T) -> T:
    """``value`` if it is a path: a ``str`` or an ``os.PathLike``."""
    import os

    return instance_arg(name, value, (str, os.PathLike), "a path (str or pathlib.Path)")


def one_of(name: str, value: T, choices: Collection[T]) -> T:
    """``value`` if it is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def pair(value: int | tuple[int, int]) -> tuple[int, int]:
    """An ``nn.Conv2d``-style size argument as a pair: ``3 -> (3, 3)``, ``(3, 1)`` as it is."""
    if isinstance(value, tuple | list):
        if len(value) != 2:
            raise ValueError(f"expected an int or a pair of ints, got {value!r}")
        return tuple(value)
    return (value, value)


def check_groups(in_channels: int, out_channels: int, groups: object) -> None:
    """``groups`` must be a positive integer that divides both channel counts."""
    positive_int("groups", groups)
    if in_channels % groups or out_channels % groups:
        raise ValueError(
            f"in_channels ({in_channels}) and out_channels ({out_channels}) must both be "
            f"divisible by groups ({groups})"
        )


def check_padding(padding: object, stride: object) -> None:
    """A string ``padding`` must be ``"valid"``, or ``"same"`` with stride 1 (as ``nn.Conv2d``)."""
    if isinstance(padding, str) and (padding not in ("same", "valid")
                                     or (padding == "same" and pair(stride) != (1, 1))):
        raise ValueError(f"padding {padding!r} must be an int, a pair, 'valid', or 'same' with "
                         f"stride 1 (got stride {stride})")


def checked_replace(instance: T, what: str, overrides: dict) -> T:
    """``dataclasses.replace(instance, **overrides)`` (whose ``__post_init__`` checks every
    value again), with a ``TypeError`` naming any field ``instance`` does not have; ``what``
    names the settings in that message ("conversion", "protocol")."""
    fields = [f.name for f in dataclasses.fields(instance)]
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise TypeError(f"unknown {what} setting(s) {', '.join(map(repr, unknown))}; "
                        f"valid ones are {', '.join(fields)}")
    return dataclasses.replace(instance, **overrides)
