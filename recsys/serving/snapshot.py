"""The per-user and per-item state a served model carries: the state after the last row of the
log it was packaged with (docs/serving.md, "State").

A request that does not send a user's history or the prior-rate counts gets them from here, as
if it came right after the log: every row of the log is earlier than it, so the history is the
user's L most recent positives and the counts are over all of the user's (item's) rows. The
definitions are those of the prepared data (docs/design.md §4.4: ``data/sequences.py``,
``data/prior_rate.py``); a request sending its own values gets exactly the features a logged
row with those values gets.
"""

from __future__ import annotations

import polars as pl

from data.bags import BAG_DTYPE, is_bag
from data.dataset import Dataset

ROWS = "rows"
POSITIVES = "positives"
HISTORY = "history"


def _counts(inter: pl.DataFrame, key: str, label: str) -> pl.DataFrame:
    positive = (pl.col(label) == 1).fill_null(False)
    return inter.group_by(key).agg(pl.len().cast(pl.Int64).alias(ROWS),
                                   positive.sum().cast(pl.Int64).alias(POSITIVES))


def user_state(dataset: Dataset, max_history: int) -> pl.DataFrame:
    """One row per user of the log or of the user table.

    Returns:
        ``user_id``, ``user_<c>`` (null, or an empty bag, for a user missing from the user
        table: OOV, as in training), ``rows`` and ``positives`` (Int64, on the primary label)
        and ``history`` (the item ids of the user's last ``max_history`` positives, most
        recent first; rows sharing a timestamp ordered by ``row_id``, as in
        ``data.sequences``).
    """
    inter = dataset.interactions
    label = dataset.primary_label
    history = (
        inter.filter((pl.col(label) == 1).fill_null(False))
        .sort("user_id", "ts", "row_id")
        .group_by("user_id", maintain_order=True)
        .agg(pl.col("item_id").reverse().head(max_history).alias(HISTORY))
    )
    state = _counts(inter, "user_id", label).join(history, on="user_id", how="left")
    if dataset.users is not None:
        users = dataset.users.with_columns(pl.col("user_id").cast(inter.schema["user_id"]))
        state = users.join(state, on="user_id", how="full", coalesce=True)
        state = state.with_columns(pl.col(f).fill_null(pl.lit([], dtype=BAG_DTYPE))
                                   for f in dataset.user_features if is_bag(state.schema[f]))
    empty = pl.lit([], dtype=pl.List(inter.schema["item_id"]))
    return state.with_columns(pl.col(ROWS).fill_null(0), pl.col(POSITIVES).fill_null(0),
                              pl.col(HISTORY).fill_null(empty)).sort("user_id")


def item_state(dataset: Dataset) -> pl.DataFrame:
    """The item table in ``item_row`` order (``item_id``, ``item_<c>``) with each item's
    ``rows`` and ``positives`` over the whole log (0 for an item never shown)."""
    counts = _counts(dataset.interactions, "item_row", dataset.primary_label)
    items = dataset.items.select("item_row", "item_id", *dataset.item_features)
    return (items.join(counts, on="item_row", how="left", maintain_order="left")
            .with_columns(pl.col(ROWS).fill_null(0), pl.col(POSITIVES).fill_null(0))
            .drop("item_row"))


def snapshot_time(dataset: Dataset) -> int:
    """The last timestamp of the log (seconds): the moment the snapshot describes."""
    return int(dataset.interactions["ts"].max())
