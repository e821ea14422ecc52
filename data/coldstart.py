"""Cold-start flags (docs/design.md §4.4): an item or user that never occurs in the train split."""

from __future__ import annotations

import polars as pl


def add_cold_flags(inter: pl.DataFrame, train: str = "train", train_items: pl.Series | None = None,
                   train_users: pl.Series | None = None) -> pl.DataFrame:
    """Adds ``cold_item`` and ``cold_user`` (Boolean) from the ``split`` column.

    Train rows are never cold by construction; a valid/test row is cold when its ``item_id``
    (resp. ``user_id``) appears in no train row. Input row order is kept.

    ``train_items`` / ``train_users``: the ids with a train row in the whole log, when ``inter``
    is only a part of it; None takes them from ``inter``.
    """
    if "split" not in inter.columns:
        raise ValueError("add_cold_flags needs a 'split' column (see data.split)")
    in_train = pl.col("split") == train

    def seen(column: str, ids: pl.Series | None) -> pl.Expr:
        known = pl.col(column).filter(in_train).unique() if ids is None else pl.lit(ids)
        return pl.col(column).is_in(known.implode())

    return inter.with_columns(
        (~seen("item_id", train_items)).alias("cold_item"),
        (~seen("user_id", train_users)).alias("cold_user"),
    )
