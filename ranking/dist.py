"""Process-group setup that works the same under ``torchrun`` and in a single plain process."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits: rank, world size, its device and the backend in use."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        """True on the rank that prints and writes shared files."""
        return self.rank == 0


def default_device(local_rank: int = 0) -> torch.device:
    """``cuda:<local_rank>`` when a GPU is visible, else CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def init_process_group_from_env(backend: str | None = None,
                                timeout: timedelta = timedelta(minutes=10)) -> DistEnv:
    """Joins (or creates) the default process group and returns where this process sits.

    Under ``torchrun`` the ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_*`` variables are
    read; without them this becomes a world of one, on an in-memory store (no port needed),
    so ``DistributedModelParallel`` and ``torch.distributed.checkpoint`` run unchanged.
    Calling it again when a group already exists returns the existing group's view.

    Args:
        backend: ``gloo``/``nccl``; default nccl with CUDA, gloo on CPU.
    """
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = default_device(local_rank)
    if dist.is_initialized():
        return DistEnv(dist.get_rank(), dist.get_world_size(), local_rank, device,
                       dist.get_backend())
    backend = backend or ("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if "WORLD_SIZE" in os.environ and "RANK" in os.environ:
        dist.init_process_group(backend=backend, timeout=timeout)
    else:
        dist.init_process_group(backend=backend, store=dist.HashStore(), rank=0, world_size=1,
                                timeout=timeout)
    return DistEnv(dist.get_rank(), dist.get_world_size(), local_rank, device, backend)


def destroy_process_group() -> None:
    """Leaves the default process group if there is one (safe to call twice)."""
    if dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def process_group(backend: str | None = None,
                  timeout: timedelta = timedelta(minutes=10)) -> Iterator[DistEnv]:
    """``init_process_group_from_env`` for the span of a job, torn down before the process ends.

    A group this call created is destroyed on the way out: after a barrier when the job
    finished (so no rank leaves while another still talks to it), straight away after an
    error. Why: a process that exits with a live gloo group can abort in interpreter shutdown
    ("terminate called without an active exception", SIGABRT), as gloo's worker threads still
    hold work whose tensors need the already finalised interpreter (pytorch/pytorch#190489).
    A group that existed before the call (a test's, a caller's) is left as it was.
    """
    created = not dist.is_initialized()
    env = init_process_group_from_env(backend, timeout)
    finished = False
    try:
        yield env
        finished = True
    finally:
        if created and dist.is_initialized():
            if finished and env.world_size > 1:
                dist.barrier()
            # destroy_process_group only drops the registry's references: the job's model
            # (TorchRec's sharding env, DDP) may still hold the group, in reference cycles that
            # would otherwise be freed in interpreter shutdown, which is the abort above.
            # Collected here, the group dies while the interpreter is whole.
            gc.collect()
            dist.destroy_process_group()
            gc.collect()
