"""A world of one process group for the in-process tests (created once for tests/ranking)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.distributed as dist

from ranking.dist import DistEnv, init_process_group_from_env


@pytest.fixture(scope="package")
def world_of_one() -> Iterator[DistEnv]:
    """The single-process path of ``init_process_group_from_env`` (no torchrun variables)."""
    created = not dist.is_initialized()
    env = init_process_group_from_env()
    assert env.world_size == 1 and env.rank == 0
    yield env
    if created:
        dist.destroy_process_group()


@pytest.fixture(scope="package", autouse=True)
def one_intra_op_thread() -> Iterator[None]:
    """One intra-op thread while the ranking tests run, restored afterwards: the models are
    tiny, and on a shared 2-core machine OpenMP threads waiting for a busy core made steps
    several times slower (see docs/ranking.md, benchmark)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
