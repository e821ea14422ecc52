"""Request rows replayed from a logged split: each row as a serving request made at its time, with
the history and prior-rate counts the log had then (not the snapshot's).

Scoring them with a served model gives what ``recsys evaluate`` gives for that split (the
parity test), and they are the input of the batch-scoring benchmark; a user can score a logged
period the same way (``recsys predict --input``).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from data.dataset import load_dataset
from data.prepare import PrepareConfig, prepare
from data.prior_rate import running_counts
from data.sequences import HISTORY_COLUMN
from recsys.config import load_run_config
from recsys.errors import UsageError
from recsys.runs.run_artifacts import load_data_state
from recsys.runs.rundir import CONFIG_FILE
from recsys.serving.schema import (
    HISTORY,
    ITEM_ID,
    ITEM_PRIOR,
    TIMESTAMP,
    USER_ID,
    USER_PRIOR,
)


def replay_requests(run_dir: str | Path, data_dir: str | Path, split: str = "test") -> pl.DataFrame:
    """The rows of ``split`` of ``data_dir`` (split as the run splits it) as request rows.

    Returns:
        ``row_id`` and the labels (extra columns a model ignores), then the request columns:
        ids, ``timestamp``, context columns, ``history``, ``user_prior`` / ``item_prior``
        and the user side features, all as the log had them just before the row.
    """
    cfg = load_run_config(Path(run_dir) / CONFIG_FILE)
    layout, vocabs, prep = load_data_state(run_dir)
    prep["fractions"] = tuple(prep.get("fractions", (0.8, 0.1, 0.1)))
    dataset = load_dataset(data_dir, allow_missing_media=cfg.data.allow_missing_media)
    prepared = prepare(dataset, PrepareConfig(**prep), vocabs=vocabs)
    frame = prepared.frame
    label = dataset.primary_label
    user = running_counts(frame, label, "user_id")
    item = running_counts(frame, label, "item_row")
    frame = frame.with_columns(pl.struct(user.get_columns()).alias(USER_PRIOR),
                               pl.struct(item.get_columns()).alias(ITEM_PRIOR))
    rows = frame.filter(pl.col("split") == split)
    if rows.height == 0:
        raise UsageError(f"{data_dir}: split '{split}' has no rows")
    item_ids = dataset.items["item_id"]
    spec = dataset.spec
    users = spec.users.categorical if spec.users else []
    return rows.select(
        "row_id", *layout.labels, pl.col("user_id").alias(USER_ID), pl.col("item_id").alias(ITEM_ID),
        pl.col("ts").alias(TIMESTAMP),
        *[pl.col(f"ctx_{c}").alias(c) for c in spec.interactions.categorical],
        pl.col(HISTORY_COLUMN).list.eval(pl.element().replace_strict(
            pl.int_range(len(item_ids), eager=True), item_ids)).alias(HISTORY),
        USER_PRIOR, ITEM_PRIOR,
        *[pl.col(f"user_{c}").alias(c) for c in users],
    )
