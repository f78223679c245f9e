"""Joining a distributed run: torchrun's environment, or the reference code's flags.

``torchrun --nproc_per_node N -m kdna train ...`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and the rendezvous address; :func:`setup` reads them, initialises the
process group (NCCL on GPUs, gloo on CPUs) and picks this process's device.
:func:`kdna.train.train_classifier` then wraps the model in DistributedDataParallel by itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["Context", "cleanup", "is_distributed", "rank", "setup"]


@dataclass(frozen=True)
class Context:
    """Where this process stands: its rank, the world size and its device."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(*, backend: str | None = None, init_method: str | None = None,
          rank: int | None = None, world_size: int | None = None,
          local_rank: int | None = None) -> Context:
    """Initialise ``torch.distributed`` when this process is one of several.

    Without arguments the values come from torchrun's environment variables; a single
    process (no ``WORLD_SIZE``, or 1) gets a non-distributed context on CUDA if present.
    """
    world_size = world_size if world_size is not None else int(os.environ.get("WORLD_SIZE", 1))
    rank = rank if rank is not None else int(os.environ.get("RANK", 0))
    local_rank = local_rank if local_rank is not None else int(os.environ.get("LOCAL_RANK", 0))
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank {rank}, world_size "
                         f"{world_size}")
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world_size > 1 and not is_distributed():
        dist.init_process_group(backend or ("nccl" if cuda else "gloo"),
                                init_method=init_method, rank=rank, world_size=world_size)
    return Context(rank, world_size, device)


def is_distributed() -> bool:
    """Whether this process is one of a ``torch.distributed`` run (the group initialised)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank in the distributed run; 0 when there is none."""
    return dist.get_rank() if is_distributed() else 0


def cleanup() -> None:
    """Leave the process group, if this process joined one."""
    if is_distributed():
        dist.destroy_process_group()
