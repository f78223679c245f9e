"""What a device gets: its autocast and gradient scaler, and its data loaders' workers.

:func:`autocast_for` is the one place that decides mixed precision, for
:func:`kdna.train.train_classifier` and anything that trains the way it does:

* CUDA at compute capability 8.0 and above (A100, H100, RTX 30xx and later): bfloat16
  autocast, no gradient scaler (bfloat16 has float32's exponent range);
* CUDA below 8.0 (T4 and V100 at 7.5 and 7.0, the free Colab GPU among them): float16
  autocast with a gradient scaler, because these GPUs have no fast bfloat16 convolutions and
  float16 gradients underflow without loss scaling;
* anything else (CPU, MPS): no autocast, unless asked for (``amp=True``: bfloat16, CPU
  autocast's own type, or the ``dtype`` given; float16 brings its scaler on any device).

:func:`loader_workers` and :func:`loader_options` choose a data loader's worker processes from
the CPU count and pin memory on CUDA.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import torch

from kdna._checks import one_of
from kdna.nn.utils import default_device

__all__ = ["DTYPES", "Precision", "autocast_for", "loader_options", "loader_workers"]

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}
BF16_CAPABILITY = (8, 0)  # Ampere: the first CUDA generation with fast bfloat16 convolutions


class Precision(NamedTuple):
    """The mixed precision of one device: ``enabled, dtype, use_scaler = autocast_for(device)``.

    ``dtype`` is the autocast dtype (``torch.float32`` when autocast is off); ``use_scaler``
    says whether the loss is scaled (float16 only).
    """

    enabled: bool
    dtype: torch.dtype
    use_scaler: bool

    def autocast(self, device: torch.device | str) -> torch.autocast:
        """The autocast context for a forward pass on ``device`` (a no-op when off)."""
        device_type = torch.device(device).type
        if not self.enabled:
            return torch.autocast(device_type, enabled=False)
        return torch.autocast(device_type, dtype=self.dtype)

    def grad_scaler(self, device: torch.device | str) -> torch.amp.GradScaler:
        """A gradient scaler for ``device``, enabled only with ``use_scaler``; a disabled one
        passes losses and steps through unchanged, so one training step serves both."""
        return torch.amp.GradScaler(torch.device(device).type, enabled=self.use_scaler)

    def describe(self) -> str:
        """A few words for a log line, e.g. ``"float16 autocast with a gradient scaler"``."""
        if not self.enabled:
            return "float32 (no autocast)"
        name = str(self.dtype).removeprefix("torch.")
        return f"{name} autocast" + (" with a gradient scaler" if self.use_scaler else "")


def autocast_for(device: torch.device | str | None = None, *, amp: bool | None = None,
                 dtype: str | torch.dtype | None = None) -> Precision:
    """The mixed precision to train with on ``device`` (default: CUDA when available).

    Args:
        device: where the model runs.
        amp: ``None`` (default): autocast on CUDA only; ``True`` / ``False`` force it.
        dtype: ``"bfloat16"`` or ``"float16"`` (or the torch dtype) to override the choice
            by compute capability (module docstring); float16 always comes with a scaler.
    """
    device = default_device(device)
    cuda = device.type == "cuda" and torch.cuda.is_available()
    if not (amp if amp is not None else cuda):
        return Precision(False, torch.float32, False)
    if isinstance(dtype, str):
        dtype = DTYPES[one_of("dtype", dtype, tuple(DTYPES))]
    elif dtype is None and cuda:
        capability = tuple(torch.cuda.get_device_capability(device))
        dtype = torch.bfloat16 if capability >= BF16_CAPABILITY else torch.float16
    elif dtype is None:
        dtype = torch.bfloat16
    if dtype not in DTYPES.values():
        raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
    return Precision(True, dtype, dtype == torch.float16)


def _usable_cpus() -> int:
    """The CPUs this process may run on (a container's or ``taskset``'s limit, where known)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def loader_workers(device: torch.device | str | None = None) -> int:
    """DataLoader worker processes for training or evaluating on ``device``.

    On CUDA, ``min(4, CPUs - 1)``: workers decode and transform the next batches while the
    main process feeds the GPU; one CPU is left to that main process, and four keep one GPU
    fed at the image sizes used here (each more costs memory and start-up time).

    On a CPU (or any other device), 0: the model's own kernels already use every core, so
    workers only compete with them; each worker process costs a fraction of a second to start,
    every epoch; and the offline sets are in-memory uint8 tensors whose transforms take
    microseconds an item. Worker start-up then costs more than loading in the main process.
    """
    if default_device(device).type != "cuda":
        return 0
    return max(0, min(4, _usable_cpus() - 1))


def loader_options(device: torch.device | str | None = None, workers: int | None = None
                   ) -> dict[str, Any]:
    """``num_workers`` (``workers``, or :func:`loader_workers` when ``None``) and
    ``pin_memory`` (on CUDA: page-locked batches copy to the GPU asynchronously) for a
    ``torch.utils.data.DataLoader`` feeding ``device``."""
    device = default_device(device)
    return {"num_workers": loader_workers(device) if workers is None else workers,
            "pin_memory": device.type == "cuda"}
