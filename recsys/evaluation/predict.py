"""Scoring a split: every row exactly once, in one process or across ranks, keyed by row_id.

Training batches drop a remainder across ranks; evaluation must not. So each rank scores a
contiguous block of equal-size batches of the split (the last batch padded by repeating row
0, whose extra scores are discarded), which keeps every collective of the sharded model in step,
and rank 0 gathers the scores and joins them with the row keys and truths.
"""

from __future__ import annotations

import time

import numpy as np
import polars as pl
import torch
import torch.distributed as dist

from data.batch import RETENTION_COUNTS, RETENTION_LABELS
from data.loader import BatchLoader
from data.prepare import Prepared
from recsys.model.build import autocast

KEY_COLUMNS = ("row_id", "user_id", "item_id", "user_key", "cold_item", "cold_user")


@torch.no_grad()
def score_split(model: torch.nn.Module, prepared: Prepared, split: str, batch_size: int,
                device: torch.device, rank: int = 0, world_size: int = 1,
                progress: bool = False) -> tuple[dict[str, np.ndarray] | None, float]:
    """Probabilities of every head for every row of ``split``.

    Returns (on rank 0: head → N float32 probabilities in split order, else None;
    samples/s of this rank).
    """
    loader = BatchLoader(prepared, split, batch_size)
    n = loader.num_rows
    per_round = batch_size * world_size
    padded = max(per_round, -(-n // per_round) * per_round)
    order = np.concatenate([np.arange(n), np.zeros(padded - n, dtype=np.int64)])
    mine = order.reshape(world_size, -1)[rank]
    was_training = model.training
    model.eval()
    scores: dict[str, list[np.ndarray]] = {}
    start = time.perf_counter()
    chunks = range(0, len(mine), batch_size)
    if progress:
        from tqdm import tqdm

        chunks = tqdm(chunks, desc=f"score {split}", unit="batch", leave=False)
    for s in chunks:
        batch = loader.batch_at(mine[s:s + batch_size]).to(device)
        with autocast(device):
            out = model(batch)
        for head, logit in out.logits.items():
            scores.setdefault(head, []).append(torch.sigmoid(logit.float()).cpu().numpy())
    elapsed = time.perf_counter() - start
    model.train(was_training)
    local = {h: np.concatenate(v) for h, v in scores.items()}
    if world_size > 1:
        gathered: list[dict[str, np.ndarray]] = [None] * world_size  # type: ignore[list-item]
        dist.all_gather_object(gathered, local)
        if rank != 0:
            return None, len(mine) / elapsed
        local = {h: np.concatenate([g[h] for g in gathered]) for h in local}
    return {h: v[:n] for h, v in local.items()}, len(mine) / max(elapsed, 1e-9)


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
