"""Retention labels, the retention proxies of docs/design.md §4.4.

With ``day = floor(ts / 86400)`` and ``D`` the last day of the whole log:

- ``return_Nd = 1`` if the user has any interaction on days ``day+1 … day+N``, else 0;
- ``ltN`` = number of distinct days in that window on which the user was active;
- rows with ``day + N > D`` are censored: both are null, never "did not return", because the
  log ends before the window does.

Everything is computed once per distinct (user, day) — far fewer than rows — and gathered back.
"""

from __future__ import annotations

import polars as pl

SECONDS_PER_DAY = 86_400
HORIZONS = (7, 14)


def retention_columns(horizon: int) -> tuple[str, str]:
    """Names of the label and the active-day count for a horizon: ``return_7d``, ``lt7``."""
    return f"return_{horizon}d", f"lt{horizon}"


def add_retention_labels(inter: pl.DataFrame, horizons: tuple[int, ...] = HORIZONS,
                         last_day: int | None = None) -> pl.DataFrame:
    """Adds ``return_<N>d`` (Int8) and ``lt<N>`` (Int32) for every horizon N, nulls where censored.

    Needs ``user_id`` and ``ts`` (seconds). Input row order is kept. ``last_day``: the log's
    last day D when ``inter`` holds only some of its users (each with all their rows); None
    takes it from ``inter``.
    """
    day = (pl.col("ts") // SECONDS_PER_DAY).alias("_day")
    if last_day is None:
        last_day = inter.select(day.max()).item()
    # Sorted by (user, day), the distinct active days of all users get consecutive numbers
    # ``_ud``; a row's number is the running count of (user, day) changes.
    ordered = inter.select("user_id", day).with_row_index("_input_pos").sort("user_id", "_day")
    new_day = pl.any_horizontal(
        pl.col("user_id") != pl.col("user_id").shift(), pl.col("_day") != pl.col("_day").shift()
    ).fill_null(True)
    ordered = ordered.with_columns((new_day.cast(pl.Int64).cum_sum() - 1).alias("_ud"))
    active = ordered.filter(new_day).select("user_id", "_day", pl.col("_ud").alias("_from"))

    labels = []
    for horizon in horizons:  # a loop over the (two) horizons, not over rows
        label, count = retention_columns(horizon)
        # Numbers are consecutive within a user, so the count of active days in (d, d+N] is
        # (number of the user's last active day <= d+N) - (number of d); d itself always
        # matches, so the difference is never null.
        reached = active.with_columns((pl.col("_day") + horizon).alias("_end")).join_asof(
            active.select("user_id", pl.col("_day").alias("_end"), pl.col("_from").alias("_to")),
            on="_end", by="user_id", strategy="backward", check_sortedness=False,
        )
        n_days = (pl.col("_to") - pl.col("_from")).cast(pl.Int32)
        censored = pl.col("_day") + horizon > pl.lit(last_day, dtype=pl.Int64)
        active = active.with_columns(
            reached.select(
                pl.when(censored).then(None).otherwise((n_days > 0).cast(pl.Int8)).alias(label),
                pl.when(censored).then(None).otherwise(n_days).alias(count),
            )
        )
        labels += [label, count]
    # Each row takes the labels of its (user, day): a gather by number, not a join, so the
    # columns of ``inter`` (history lists included) are never copied.
    ud = pl.zeros(inter.height, pl.Int64, eager=True).scatter(ordered["_input_pos"], ordered["_ud"])
    return inter.hstack(active.select(labels)[ud])
