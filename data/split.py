"""Train / valid / test splits of the canonical interactions (docs/design.md §4.4, "split").

Every split is deterministic: rows are ordered by ``(ts, row_id)``, so a tie in time is broken
by source row order rather than by whatever order a sort happened to leave.
"""

from __future__ import annotations

import math

import polars as pl

SPLITS = ("train", "valid", "test")


def _check_fractions(fractions: tuple[float, float, float]) -> None:
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-9:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")


def split_cuts(n: int, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> tuple[int, int]:
    """Row counts ``(n_train, n_train + n_valid)`` of a time split of ``n`` rows.

    Cumulative fractions are rounded half up (not each part), so the parts always sum to ``n``.
    """
    _check_fractions(fractions)
    return math.floor(n * fractions[0] + 0.5), math.floor(n * (fractions[0] + fractions[1]) + 0.5)


TimeKey = tuple[int, int]  # (ts, row_id) of one row: its place in time order


def time_cut_keys(inter: pl.DataFrame, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
                  ) -> tuple[TimeKey | None, TimeKey | None]:
    """The ``(ts, row_id)`` of the first valid row and of the first test row of a time split
    of ``inter`` (None where that part is empty at the end: the position is past the last row).
    """
    positions = split_cuts(inter.height, fractions)
    # The rows at the two cut positions in (ts, row_id) order are found with one sort of two
    # columns (row_id is unique).
    keys = inter.select("ts", "row_id").sort("ts", "row_id")
    return tuple(keys.row(p) if p < inter.height else None for p in positions)  # type: ignore[return-value]


def time_split(inter: pl.DataFrame, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
               cut_keys: tuple[TimeKey | None, TimeKey | None] | None = None) -> pl.DataFrame:
    """Adds ``split`` (String): the first 80% of rows in time order are train, the next 10%
    valid, the last 10% test (for the default fractions).

    The split is by row count, so rows sharing a timestamp at a boundary may fall on both sides
    of it (ordered by ``row_id``); no train row is ever later than a valid row, and no valid row
    later than a test row. Input row order is kept.

    ``cut_keys``: the ``time_cut_keys`` of the whole log when ``inter`` is only a part of it
    (the bounded-memory preparation splits one part of the users at a time); None computes
    them from ``inter``.
    """
    cut_valid, cut_test = cut_keys if cut_keys is not None else time_cut_keys(inter, fractions)

    def earlier_than(key: TimeKey | None) -> pl.Expr:
        """True for the rows before ``key`` in time order (every row when there is none)."""
        if key is None:
            return pl.lit(True)
        ts, row_id = key
        return (pl.col("ts") < ts) | ((pl.col("ts") == ts) & (pl.col("row_id") < row_id))

    return inter.with_columns(
        pl.when(earlier_than(cut_valid)).then(pl.lit("train"))
        .when(earlier_than(cut_test)).then(pl.lit("valid"))
        .otherwise(pl.lit("test"))
        .alias("split")
    )


def leave_last_out(inter: pl.DataFrame) -> pl.DataFrame:
    """Adds ``split`` per user: the user's last interaction (by ``ts``, then ``row_id``) is test,
    the second to last valid, the rest train.

    A user with one interaction has it in test, one with two has one in valid and one in test:
    such users are cold in the train split, which is what leave-last-out evaluation measures.
    Input row order is kept.
    """
    # Position of each row among its user's rows counted from the end (0 = last).
    from_end = pl.arg_sort_by("ts", "row_id", descending=True).arg_sort().over("user_id")
    return inter.with_columns(
        pl.when(from_end == 0).then(pl.lit("test"))
        .when(from_end == 1).then(pl.lit("valid"))
        .otherwise(pl.lit("train"))
        .alias("split")
    )


def user_time_split(inter: pl.DataFrame, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> pl.DataFrame:
    """Adds ``split`` per user: the first 80% of each user's rows in time order are train, the
    next 10% valid, the last 10% test (for the default fractions; cuts rounded as in
    ``split_cuts``), so every user with enough rows is in test.

    Within a user nothing leaks (histories and prior rates only look back), but across users a
    train row may be later than another user's test row: it measures how well a user's own
    future is ranked, not a deployment at one point in time (that is ``time_split``). Input row
    order is kept.
    """
    _check_fractions(fractions)
    n = pl.len().over("user_id")
    position = pl.arg_sort_by("ts", "row_id").arg_sort().over("user_id")
    cut_valid = (n * fractions[0] + 0.5).floor()
    cut_test = (n * (fractions[0] + fractions[1]) + 0.5).floor()
    return inter.with_columns(
        pl.when(position < cut_valid).then(pl.lit("train"))
        .when(position < cut_test).then(pl.lit("valid"))
        .otherwise(pl.lit("test"))
        .alias("split")
    )
