"""A world of one process for a served model, whatever the environment says.

A served model is one process: the sharded model still needs a default process group (DMP and
DCP run through it), but it must be of size one even under ``torchrun`` (a rank that packages
a run after training must not wait for the others), so ``RANK`` / ``WORLD_SIZE`` are not read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist

from ranking.dist import DistEnv, default_device
from recsys.errors import UsageError

_users = 0  # open handles on the group this module created (0: it created none, or closed it)


def open_world_of_one() -> tuple[DistEnv, Callable[[], None]]:
    """(the process's view of a world of one, a function that releases this handle).

    The first call creates the group; later ones share it, and the last release destroys it
    (several served models can live in one process). A group someone else created is used
    when it has one member and never destroyed here.

    Raises:
        UsageError: this process already belongs to a larger group (scoring would need every
            rank to take part in each request).
    """
    global _users
    device = default_device()
    if dist.is_initialized():
        if dist.get_world_size() != 1:
            raise UsageError(f"a served model runs in one process, but this one is rank "
                             f"{dist.get_rank()} of {dist.get_world_size()}")
        if not _users:
            return DistEnv(0, 1, 0, device, dist.get_backend()), lambda: None
    else:
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        # An in-memory store: no port, so any number of served models can run on one machine.
        dist.init_process_group(backend=backend, store=dist.HashStore(), rank=0, world_size=1)
    _users += 1
    released = False

    def release() -> None:
        global _users
        nonlocal released
        if released:
            return
        released = True
        _users -= 1
        if _users == 0 and dist.is_initialized():
            dist.destroy_process_group()

    return DistEnv(0, 1, 0, device, dist.get_backend()), release


@contextmanager
def world_of_one() -> Iterator[DistEnv]:
    """A handle from ``open_world_of_one`` for the span of a job."""
    env, close = open_world_of_one()
    try:
        yield env
    finally:
        close()
