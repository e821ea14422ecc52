"""Shared helpers of the ranking tests: a toy world, a parent module standing in for EM3, and
a launcher for multi-process gloo jobs (spawned, no external launcher)."""

from __future__ import annotations

import socket
from collections.abc import Callable

import torch
import torch.multiprocessing as mp
from torch import nn

from data.batch import Batch, FeatureLayout
from ranking.config import RankingConfig
from ranking.model import RankingModel, RankingOutput
from ranking.testing.toy_data import ToyWorld

CONTENT_IN = 6  # width of the fake "token features" the parent's content tower reads


def toy_world() -> ToyWorld:
    """Small enough for milliseconds per step, big enough that every table has many rows."""
    return ToyWorld.create(num_users=300, num_items=400, num_groups=8, max_history=10, seed=0)


class ContentParent(nn.Module):
    """Stands in for the EM3 model: a dense content tower feeding a nested ranking model.

    The tower reads fixed per-item features (a fake content cache indexed by item row), so
    the sharded ranking tables sit two levels down, as they will under the Q-Former model.
    """

    def __init__(self, layout: FeatureLayout, config: RankingConfig,
                 device: str | torch.device = "cpu") -> None:
        super().__init__()
        self.content_tower = nn.Sequential(nn.Linear(CONTENT_IN, config.content_dim, device=device),
                                           nn.Tanh())
        self.ranker = RankingModel(layout, config, device=device)

    def forward(self, batch: Batch, item_features: torch.Tensor) -> RankingOutput:
        """item_features: num_items x CONTENT_IN, the content cache."""
        target = self.content_tower(item_features[batch.target_item_rows])
        history = self.content_tower(item_features[batch.hist_item_rows])
        return self.ranker(batch, target, history)


def item_features(layout: FeatureLayout, seed: int = 5) -> torch.Tensor:
    """num_items x CONTENT_IN fixed random features (identical on every rank)."""
    return torch.randn(layout.num_items, CONTENT_IN, generator=torch.Generator().manual_seed(seed))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, fn: Callable, world_size: int, port: int, args: tuple) -> None:
    import os

    # What torchrun would export: the code under test reads only these variables.
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      LOCAL_WORLD_SIZE=str(world_size))
    torch.set_num_threads(1)  # two ranks share two cores
    fn(rank, *args)


def spawn(fn: Callable, world_size: int, *args) -> None:
    """Runs ``fn(rank, *args)`` in ``world_size`` fresh processes; re-raises a rank's error."""
    mp.start_processes(_entry, args=(fn, world_size, free_port(), args), nprocs=world_size,
                       join=True, start_method="spawn")
