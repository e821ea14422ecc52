"""Token features for training: built once per dataset and encoder settings, then memory-mapped.

Rank 0 builds (or resumes) the cache while the others wait; every rank then opens the same
files, which are checked against the dataset's items so a stale cache is refused.
"""

from __future__ import annotations

import torch.distributed as dist

from data.dataset import Dataset
from multimodal.token_cache import TokenCache, build_token_cache
from multimodal.tokens import TokenTensors
from ranking.dist import DistEnv
from recsys.config import TrainConfig


def load_item_tokens(cfg: TrainConfig, dataset: Dataset, env: DistEnv,
                     progress: bool = True) -> TokenTensors:
    """The token features of every item of ``dataset`` (N rows in item-table order)."""
    c = cfg.content
    if env.is_main:
        build_token_cache(dataset, vision=c.vision, text=c.text, tokens=c.tokens, progress=progress,
                          allow_missing_media=cfg.data.allow_missing_media)
    if env.world_size > 1:
        dist.barrier()
    return TokenCache.for_dataset(dataset, vision=c.vision, text=c.text, tokens=c.tokens).tensors
