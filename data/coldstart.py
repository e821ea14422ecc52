"""Cold-start flags (docs/design.md §4.4): an item or user that never occurs in the train split."""

from __future__ import annotations

import polars as pl


def add_cold_flags(inter: pl.DataFrame, train: str = "train") -> pl.DataFrame:
    """Adds ``cold_item`` and ``cold_user`` (Boolean) from the ``split`` column.

    Train rows are never cold by construction; a valid/test row is cold when its ``item_id``
    (resp. ``user_id``) appears in no train row. Input row order is kept.
    """
    if "split" not in inter.columns:
        raise ValueError("add_cold_flags needs a 'split' column (see data.split)")
    in_train = pl.col("split") == train
    return inter.with_columns(
        (~pl.col("item_id").is_in(pl.col("item_id").filter(in_train).unique().implode())).alias("cold_item"),
        (~pl.col("user_id").is_in(pl.col("user_id").filter(in_train).unique().implode())).alias("cold_user"),
    )
