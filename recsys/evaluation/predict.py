"""Scoring a split: every row exactly once, in one process or across ranks, keyed by row_id.

Training batches drop a remainder across ranks; evaluation must not. So each rank scores a
contiguous block of equal-size batches of the split (the last batch padded by repeating row
0, whose extra scores are discarded), which keeps every collective of the sharded model in step,
and rank 0 gathers the scores and joins them with the row keys and truths.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import polars as pl
import torch
import torch.distributed as dist

from data.batch import RETENTION_COUNTS, RETENTION_LABELS, Batch
from data.loader import BatchLoader
from data.prepare import Prepared
from data.shard_manifest import ShardManifest
from data.stream import ShardStream
from recsys.model.build import autocast

KEY_COLUMNS = ("row_id", "user_id", "item_id", "user_key", "cold_item", "cold_user")


def rank_positions(n: int, batch_size: int, rank: int, world_size: int) -> np.ndarray:
    """This rank's split positions to score: a contiguous block of equal-size batches of the
    split padded (by repeating row 0) to a whole number of rounds of ``world_size`` batches."""
    per_round = batch_size * world_size
    padded = max(per_round, -(-n // per_round) * per_round)
    order = np.concatenate([np.arange(n), np.zeros(padded - n, dtype=np.int64)])
    return order.reshape(world_size, -1)[rank]


@torch.no_grad()
def score_split(model: torch.nn.Module, prepared: Prepared, split: str, batch_size: int,
                device: torch.device, rank: int = 0, world_size: int = 1,
                progress: bool = False) -> tuple[dict[str, np.ndarray] | None, float]:
    """Probabilities of every head for every row of ``split``.

    Returns (on rank 0: head → N float32 probabilities in split order, else None;
    samples/s of this rank).
    """
    loader = BatchLoader(prepared, split, batch_size)
    mine = rank_positions(loader.num_rows, batch_size, rank, world_size)
    batches = (loader.batch_at(mine[s:s + batch_size]) for s in range(0, len(mine), batch_size))
    return _score(model, batches, -(-len(mine) // batch_size), len(mine), loader.num_rows, split,
                  device, rank, world_size, progress)


@torch.no_grad()
def score_shards(model: torch.nn.Module, shards: ShardManifest, split: str, batch_size: int,
                 device: torch.device, rank: int = 0, world_size: int = 1, progress: bool = False,
                 chunk_rows: int = 262_144) -> tuple[dict[str, np.ndarray] | None, float]:
    """``score_split`` of a split of prepared shards, read ``chunk_rows`` rows at a time (and
    each rank only its block of rows): the same scores with bounded memory."""
    stream = ShardStream(shards, split, batch_size, prefetch=False)
    n = stream.num_rows
    mine = rank_positions(n, batch_size, rank, world_size)
    step = max(1, chunk_rows // batch_size) * batch_size

    def batches() -> Iterator[Batch]:
        for s in range(0, len(mine), step):
            positions = mine[s:s + step]
            # Real rows are this block's first ones (contiguous); the padding after them
            # repeats row 0, read first.
            real = rank * len(mine) + s + np.arange(len(positions)) < n
            lo = int(positions[real][0]) if real.any() else 0
            hi = int(positions[real][-1]) + 1 if real.any() else 0
            arrays = stream.read_arrays([(0, 1), (lo, hi)] if hi > lo else [(0, 1)])
            local = np.where(real, positions - lo + 1, 0)
            for b in range(0, len(local), batch_size):
                yield arrays.batch_at(local[b:b + batch_size])

    return _score(model, batches(), -(-len(mine) // batch_size), len(mine), n, split, device,
                  rank, world_size, progress)


def _score(model: torch.nn.Module, batches: Iterator[Batch], count: int, rows: int, n: int,
           split: str, device: torch.device, rank: int, world_size: int,
           progress: bool) -> tuple[dict[str, np.ndarray] | None, float]:
    """Scores ``count`` batches (``rows`` rows, padding included) and gathers the ranks' scores
    on rank 0, cut to the split's ``n`` rows."""
    was_training = model.training
    model.eval()
    scores: dict[str, list[np.ndarray]] = {}
    start = time.perf_counter()
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, total=count, desc=f"score {split}", unit="batch", leave=False)
    for batch in batches:
        with autocast(device):
            out = model(batch.to(device))
        for head, logit in out.logits.items():
            scores.setdefault(head, []).append(torch.sigmoid(logit.float()).cpu().numpy())
    elapsed = time.perf_counter() - start
    model.train(was_training)
    local = {h: np.concatenate(v) for h, v in scores.items()}
    if world_size > 1:
        gathered: list[dict[str, np.ndarray]] = [None] * world_size  # type: ignore[list-item]
        dist.all_gather_object(gathered, local)
        if rank != 0:
            return None, rows / elapsed
        local = {h: np.concatenate([g[h] for g in gathered]) for h in local}
    return {h: v[:n] for h, v in local.items()}, rows / max(elapsed, 1e-9)


def predictions_frame(prepared: Prepared, split: str, probs: dict[str, np.ndarray]) -> pl.DataFrame:
    """Row keys, truths and ``pred_<head>`` columns in the ``recsys.runs.rundir`` layout."""
    rows = prepared.frame.filter(pl.col("split") == split)
    labels = list(prepared.layout.labels)
    retention = [r for r in RETENTION_LABELS if r in rows.columns]
    counts = [c for c in RETENTION_COUNTS if c in rows.columns]
    cols: list[pl.Expr | pl.Series] = [pl.col(c) for c in KEY_COLUMNS]
    for label in labels:
        cols += [pl.col(label).cast(pl.Int8), pl.Series(f"pred_{label}", probs[label])]
    for r in retention:
        cols.append(pl.col(r).cast(pl.Int8))
        if r in probs:
            cols.append(pl.Series(f"pred_{r}", probs[r]))
    cols += [pl.col(c) for c in counts]
    return rows.select(cols)
