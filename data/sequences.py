"""Behaviour sequences: each row's leak-free history of positively labelled items (docs/design.md §4.4).

The history of a row ``(user, ts)`` is the ``item_row`` of the user's most recent ``L``
interactions with ``label == 1`` whose timestamp is strictly earlier than ``ts``, most recent
first. Rows sharing a timestamp never see each other, whatever their order in the log.

How it stays O(n log n) with no per-user Python work:

1. sort by ``(user_id, ts, row_id)`` and number the positive rows ``g = 0..P-1`` in that order;
2. for every positive ``g``, one ``rolling`` window over ``g`` (grouped by user) gives the list
   of the user's positives ``g-L+1 .. g``, reversed — the history of anyone who has seen
   exactly those positives;
3. for every row, an exclusive running count of positives, taken at the first row of its
   ``(user, ts)`` group, says how many positives precede it strictly in time; the last of them
   is positive number ``count - 1``, so the row's history is a plain gather of list ``count - 1``
   (an empty list when the count has not moved since the user's first row).
"""

from __future__ import annotations

import polars as pl

HISTORY_COLUMN = "hist_rows"


def first_of_run(value: pl.Expr, *keys: str) -> pl.Expr:
    """``value`` at the first row of each run of equal ``keys`` in a sorted frame."""
    starts = pl.any_horizontal([pl.col(k) != pl.col(k).shift() for k in keys]).fill_null(True)
    return pl.when(starts).then(value).forward_fill()


def add_history(inter: pl.DataFrame, label: str, max_len: int,
                column: str = HISTORY_COLUMN) -> pl.DataFrame:
    """Adds ``column`` (List[Int64]): each row's behaviour sequence on ``label``, length ≤ max_len.

    Args:
        inter: canonical interactions (``row_id``, ``user_id``, ``ts``, ``item_row``, ``label``).
        label: the 0/1 label defining a positive (the primary label in ``prepare``).
        max_len: L, the longest history kept.

    Returns ``inter`` with the column added, row order kept; rows without history get ``[]``.
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    positive = (pl.col(label) == 1).fill_null(False).cast(pl.Int64)
    ordered = (
        inter.select("user_id", "ts", "row_id", "item_row", positive.alias("_pos"))
        .with_row_index("_input_pos")
        .sort("user_id", "ts", "row_id")
    )
    # Positives strictly before each row, counted over the whole sorted log (exclusive sum);
    # taken at the first row of the row's (user, ts) run so that same-time positives stay out,
    # and at the user's first row to know where this user's positives start.
    before = pl.col("_pos").cum_sum() - pl.col("_pos")
    ordered = ordered.with_columns(before.alias("_before")).with_columns(
        first_of_run(pl.col("_before"), "user_id", "ts").alias("_seen"),
        first_of_run(pl.col("_before"), "user_id").alias("_user_start"),
    )
    # Index of the row's most recent earlier positive; rows without one point one past the
    # last positive, where an empty list is appended below (cheaper than gathering nulls and
    # filling them afterwards, which copies every list a second time).
    n_positives = ordered.select(pl.col("_pos").sum()).item()
    key_sorted = ordered.select(
        pl.when(pl.col("_seen") > pl.col("_user_start")).then(pl.col("_seen") - 1)
        .otherwise(n_positives)
    ).to_series()
    # Back to input order: a scatter by input position (O(n), no second sort).
    key = pl.zeros(inter.height, pl.Int64, eager=True).scatter(ordered["_input_pos"], key_sorted)

    positives = ordered.filter(pl.col("_pos") == 1).select(
        pl.int_range(pl.len(), dtype=pl.Int64).alias("_g"), "user_id", "item_row"
    )
    windows = (
        positives.rolling(index_column="_g", period=f"{max_len}i", group_by="user_id")
        .agg(pl.col("item_row").cast(pl.Int64).reverse().alias(column))
        .sort("_g")  # rolling keeps groups together; make list g sit at position g
    )[column]
    empty = pl.Series(column, [[]], dtype=pl.List(pl.Int64))
    # One contiguous chunk: gathering from a chunked list column is several times slower.
    windows = pl.concat([windows, empty], rechunk=True)
    return inter.with_columns(windows.gather(key).alias(column))
