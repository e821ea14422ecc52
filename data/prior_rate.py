"""Prior rates: leak-free running summaries of how often the user (and the item) got a yes before.

Three derived features per row ``(user, ts)`` (docs/derived_data.md), over the user's rows with a
timestamp strictly earlier than ``ts`` (rows sharing a timestamp never see each other, as for
the behaviour sequence):

- ``prior_logit`` (dense, Float32): the logit of the Laplace-smoothed share of those rows with
  a positive primary label, ``(positives + 1) / (rows + 2)``, clipped to ``[-4, 4]``; 0 (a rate
  of 1/2) without earlier rows;
- ``prior_rate`` (pooled ID): the same smoothed rate bucketed on the logit scale in steps of
  1/2 over ``[-4, 4)`` (16 buckets, the ends open); bucket 16 = no earlier row;
- ``prior_rows`` (pooled ID): how many earlier rows, ``0`` for none, else
  ``1 + floor(log2(rows))``, capped at 16.

Why: the behaviour sequence holds positives only, so it says what a user likes but not how
often they like what they are shown. On MovieLens that habit decides most of the test AUC: one
user never seen in training holds a large share of the test rows and likes far fewer of them
than the split as a whole (docs/derived_data.md, "Prior rate", has the figures). The dense
logit is what lets a model extrapolate to a user harsher than any it trained on (an embedding
per bucket cannot: the extreme buckets hardly occur in training); the buckets let it bend the
response. None of the three needs state from training (the buckets are fixed), so a trained run
encodes new data exactly as it saw its own.

``add_item_prior_rate`` derives the same three over the target item's earlier rows (any user):
``prior_item_logit``, ``prior_item_rate``, ``prior_item_rows``.
"""

from __future__ import annotations

import polars as pl

from data.sequences import first_of_run

RATE_FEATURE = "prior_rate"
ROWS_FEATURE = "prior_rows"
LOGIT_FEATURE = "prior_logit"
PRIOR_FEATURES = (RATE_FEATURE, ROWS_FEATURE)  # the pooled ones
# The same three over the target item's earlier rows (all users): the item's main effect.
ITEM_RATE_FEATURE = "prior_item_rate"
ITEM_ROWS_FEATURE = "prior_item_rows"
ITEM_LOGIT_FEATURE = "prior_item_logit"
ITEM_PRIOR_FEATURES = (ITEM_RATE_FEATURE, ITEM_ROWS_FEATURE)
MAX_LOGIT = 4.0

# [-4, 4) in steps of 1/2; the first and last also take what lies beyond. Half-unit steps had
# the best MovieLens validation AUC of the widths tried (1/4, 1/2, 1, and equal steps of the
# rate itself); the measurement is in docs/derived_data.md, "Prior rate".
LOGIT_STEP = 0.5
LOGIT_BUCKETS = 16
NO_PRIOR = LOGIT_BUCKETS  # the rate bucket of a row without earlier rows
MAX_ROWS_BUCKET = 16


def add_prior_rate(inter: pl.DataFrame, label: str) -> pl.DataFrame:
    """Adds ``prior_logit`` (Float32), ``prior_rate`` and ``prior_rows`` (Int64 bucket
    indices) over the user's earlier rows, row order kept.

    Args:
        inter: canonical interactions (``row_id``, ``user_id``, ``ts``, ``label``).
        label: the 0/1 label counted as a positive (the primary label in ``prepare``).
    """
    return _add_running_rate(inter, label, "user_id",
                             (LOGIT_FEATURE, RATE_FEATURE, ROWS_FEATURE))


def add_item_prior_rate(inter: pl.DataFrame, label: str) -> pl.DataFrame:
    """Adds ``prior_item_logit``, ``prior_item_rate`` and ``prior_item_rows``: the same three
    features over the target item's earlier rows, whoever the user (``item_row`` keys it).

    Why: on MovieLens the item's own like rate so far ranks a user's rows better than the item
    ID embedding learns to (docs/ranking.md, "Within-user ranking"); like the user's rate it
    needs no training state, so a trained run encodes new data exactly as it saw its own.
    """
    return _add_running_rate(inter, label, "item_row",
                             (ITEM_LOGIT_FEATURE, ITEM_RATE_FEATURE, ITEM_ROWS_FEATURE))


def _add_running_rate(inter: pl.DataFrame, label: str, key: str,
                      names: tuple[str, str, str]) -> pl.DataFrame:
    """The (logit, rate bucket, rows bucket) features ``names`` of ``key``'s earlier rows."""
    counts = running_counts(inter, label, key)
    derived = counts.select(rate_features(pl.col("rows"), pl.col("positives"), names))
    return inter.with_columns(derived.iter_columns())


def running_counts(inter: pl.DataFrame, label: str, key: str) -> pl.DataFrame:
    """Per row, how many of ``key``'s rows (the user's: ``user_id``; the item's: ``item_row``)
    have a strictly earlier timestamp, and how many of those are positive on ``label``.

    Returns a frame of ``inter.height`` rows in input order with Int64 ``rows`` and
    ``positives``: the state that ``rate_features`` turns into the prior-rate features, and
    what a serving request carries for a user or item (``recsys.serving``).
    """
    positive = (pl.col(label) == 1).fill_null(False).cast(pl.Int64)
    ordered = (
        inter.select(pl.col(key).alias("_key"), "ts", "row_id", positive.alias("_pos"))
        .with_row_index("_input_pos")
        .sort("_key", "ts", "row_id")
    )
    # Exclusive running counts within the key (user or item), taken at the first row of the
    # (key, ts) run so that rows sharing a timestamp stay out of each other's counts: global
    # running counts minus their value at the key's first row (the sort keeps keys contiguous;
    # cheaper than a grouped ``over``, which hashes every row).
    index = pl.int_range(pl.len(), dtype=pl.Int64)
    before = pl.col("_pos").cum_sum() - pl.col("_pos")
    ordered = ordered.with_columns(index.alias("_index"), before.alias("_before")).select(
        "_input_pos",
        (first_of_run(pl.col("_index"), "_key", "ts")
         - first_of_run(pl.col("_index"), "_key")).alias("rows"),
        (first_of_run(pl.col("_before"), "_key", "ts")
         - first_of_run(pl.col("_before"), "_key")).alias("positives"),
    )
    # Back to input order: a scatter by input position (O(n), no second sort).
    position = ordered["_input_pos"]
    return pl.DataFrame([
        pl.zeros(inter.height, pl.Int64, eager=True).scatter(position, ordered[c]).alias(c)
        for c in ("rows", "positives")])


def rate_features(rows: pl.Expr, positives: pl.Expr,
                  names: tuple[str, str, str] = (LOGIT_FEATURE, RATE_FEATURE, ROWS_FEATURE)
                  ) -> list[pl.Expr]:
    """The (logit, rate bucket, rows bucket) expressions, named ``names``, of ``rows`` earlier
    rows of which ``positives`` were positive (the module docstring has the definitions)."""
    logit_name, rate_name, rows_name = names
    rate = (positives + 1) / (rows + 2)
    logit = (rate / (1 - rate)).log()
    logit_bucket = (logit / LOGIT_STEP).floor() + LOGIT_BUCKETS // 2
    return [
        logit.clip(-MAX_LOGIT, MAX_LOGIT).cast(pl.Float32).alias(logit_name),
        pl.when(rows == 0).then(NO_PRIOR)
        .otherwise(logit_bucket.clip(0, LOGIT_BUCKETS - 1)).cast(pl.Int64).alias(rate_name),
        pl.when(rows == 0).then(0)
        .otherwise((rows.cast(pl.Float64).log(2).floor() + 1).clip(1, MAX_ROWS_BUCKET))
        .cast(pl.Int64).alias(rows_name),
    ]
