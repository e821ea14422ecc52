"""The item prior rate with bounded memory: the cross-user pass of ``data.prepare_bounded``.

``prepare`` derives ``prior_item_logit`` / ``prior_item_rate`` / ``prior_item_rows`` with
``data.prior_rate.add_item_prior_rate`` over the whole log: an item's earlier rows come from
every user, so the user partitions of pass 1 cannot derive them. This pass regroups the rows
by item, in two steps:

1. per user partition ``p`` (``work/rows/<p>/``): the five columns the rate needs (``row_id``,
   ``item_row``, ``ts``, the primary label, and ``p``) go to ``work/items/<k>/<p>.parquet``,
   ``k`` = a hash of ``item_row`` modulo ``partitions``: every item's rows in one item
   partition;
2. per item partition ``k``, in memory: the same ``add_item_prior_rate`` (each item's values
   depend on that item's rows only, so a partition holding whole items gives exactly the whole
   log's values); its ``(row_id, prior_item_logit, prior_item_rate, prior_item_rows)`` go
   back by user partition to ``work/item_prior/<p>/<k>.parquet``, which pass 3 joins onto the
   user partition's rows (``item_prior_columns``).

Memory: one user partition's five columns in step 1, one item partition's (about
``rows / partitions`` rows, or the most popular item's rows if more) in step 2.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl

from data.prior_rate import (
    ITEM_LOGIT_FEATURE,
    ITEM_RATE_FEATURE,
    ITEM_ROWS_FEATURE,
    add_item_prior_rate,
)

USER_PART = "_user_part"
ITEM_PRIOR_COLUMNS = ("row_id", ITEM_LOGIT_FEATURE, ITEM_RATE_FEATURE, ITEM_ROWS_FEATURE)


def item_prior_pass(rows: Path, work: Path, partitions: int, label: str, progress: bool) -> Path:
    """Derives the item prior rate of every row in the user partitions under ``rows``
    (``rows/<p>/*.parquet``, canonical columns) into ``work/item_prior/<p>/<k>.parquet``, with
    ``partitions`` item partitions; returns ``work/item_prior``. ``label``: the primary label."""
    from tqdm.auto import tqdm

    by_item, out = work / "items", work / "item_prior"
    for p in tqdm(range(partitions), desc="item pass: regroup", unit="part", disable=not progress):
        files = sorted((rows / f"{p:05d}").glob("*.parquet"))
        if not files:
            continue
        part = (pl.scan_parquet(files).select("row_id", "item_row", "ts", label)
                .with_columns(pl.lit(p, pl.Int64).alias(USER_PART)).collect())
        k = (pl.col("item_row").hash(seed=0) % partitions).alias("_item_part")
        for (key,), piece in part.with_columns(k).partition_by(
                "_item_part", as_dict=True, include_key=False).items():
            (by_item / f"{key:05d}").mkdir(parents=True, exist_ok=True)
            piece.write_parquet(by_item / f"{key:05d}" / f"{p:05d}.parquet", compression="lz4")
    for k in tqdm(range(partitions), desc="item pass: rate", unit="part", disable=not progress):
        files = sorted((by_item / f"{k:05d}").glob("*.parquet"))
        if not files:
            continue
        rated = add_item_prior_rate(pl.concat([pl.read_parquet(f) for f in files]), label)
        for (p,), piece in rated.select(USER_PART, *ITEM_PRIOR_COLUMNS).partition_by(
                USER_PART, as_dict=True, include_key=False).items():
            (out / f"{p:05d}").mkdir(parents=True, exist_ok=True)
            piece.write_parquet(out / f"{p:05d}" / f"{k:05d}.parquet", compression="lz4")
    shutil.rmtree(by_item, ignore_errors=True)  # read once: free its disk before pass 3
    return out


def item_prior_columns(item_prior: Path, p: int) -> pl.DataFrame:
    """User partition ``p``'s ``row_id`` → ``prior_item_logit`` (Float32), ``prior_item_rate``
    and ``prior_item_rows`` (Int64), one row per row of the partition, in no particular order."""
    files = sorted((item_prior / f"{p:05d}").glob("*.parquet"))
    return pl.concat([pl.read_parquet(f) for f in files], how="vertical")
