"""Request rows → the model's features, as ``data.prepare`` derives them from a logged row.

The result is a ``Prepared`` whose frame holds one ``serve`` split, so the rows are batched and
scored by the same code as ``recsys evaluate`` (``data.loader.BatchLoader``,
``recsys.evaluation.predict.score_split``): a request that carries what a logged row had gets the same
score (tests/recsys/serving/test_parity.py).
"""

from __future__ import annotations

import polars as pl

from data.bags import BAG_DTYPE, is_bag
from data.batch import ITEM_FEATURE, USER_FEATURE
from data.prepare import PrepareConfig, Prepared, index_column
from data.prior_rate import (
    ITEM_LOGIT_FEATURE,
    ITEM_RATE_FEATURE,
    ITEM_ROWS_FEATURE,
    LOGIT_FEATURE,
    RATE_FEATURE,
    ROWS_FEATURE,
    rate_features,
)
from data.sequences import HISTORY_COLUMN
from recsys.serving import snapshot
from recsys.serving.package import Package
from recsys.serving.schema import (
    HISTORY,
    ITEM_POSITIVES,
    ITEM_ROWS,
    USER_POSITIVES,
    USER_ROWS,
)

SERVE_SPLIT = "serve"


def encode_requests(valid: pl.DataFrame, package: Package) -> Prepared:
    """The prepared form of validated request rows (``recsys.serving.validate``).

    Unknown users read the OOV user rows and count as users without earlier rows; items
    outside the catalogue read the unknown-item vector, OOV side features and the no-content
    token row (docs/serving.md, "Unknown users and items").
    """
    layout = package.layout
    items = package.catalogue.items.filter(pl.col("item_id").is_not_null())
    unknown_row = package.unknown_item_row
    item_features = [f"item_{c}" for c in package.spec.items.categorical]
    frame = valid.with_row_index("row_id").with_columns(pl.col("row_id").cast(pl.Int64))
    frame = frame.join(
        items.select("item_id", "item_row", *item_features,
                     pl.col(snapshot.ROWS).alias("_item_rows"),
                     pl.col(snapshot.POSITIVES).alias("_item_positives")),
        on="item_id", how="left", maintain_order="left",
    ).with_columns(pl.col("item_row").fill_null(unknown_row))
    frame = frame.join(_user_snapshot(package), on="user_id", how="left", maintain_order="left")
    frame = frame.with_columns(_user_features(frame, package))

    # The history as item-table rows: the request's, else the snapshot's (an unknown user has
    # none); ids outside the catalogue read the no-content row (and the unknown-item vector).
    ids = pl.coalesce(pl.col(HISTORY), pl.col("_snap_history"))
    frame = frame.with_columns(
        ids.list.eval(pl.element().replace_strict(items["item_id"], items["item_row"],
                                                  default=unknown_row, return_dtype=pl.Int64))
        .fill_null(pl.lit([], dtype=pl.List(pl.Int64))).alias(HISTORY_COLUMN))

    user_rows = pl.coalesce(pl.col(USER_ROWS), pl.col("_user_rows"), pl.lit(0))
    user_pos = pl.coalesce(pl.col(USER_POSITIVES), pl.col("_user_positives"), pl.lit(0))
    item_rows = pl.coalesce(pl.col(ITEM_ROWS), pl.col("_item_rows"), pl.lit(0))
    item_pos = pl.coalesce(pl.col(ITEM_POSITIVES), pl.col("_item_positives"), pl.lit(0))
    derived: list[pl.Expr] = []
    if package.prep.get("prior_rate"):
        derived += rate_features(user_rows, user_pos, (LOGIT_FEATURE, RATE_FEATURE, ROWS_FEATURE))
    if package.prep.get("item_prior_rate"):
        derived += rate_features(item_rows, item_pos,
                                 (ITEM_LOGIT_FEATURE, ITEM_RATE_FEATURE, ITEM_ROWS_FEATURE))
    frame = frame.with_columns(derived)

    # Vocabulary indices, from the same sources as data.prepare.prepare.
    sources = {USER_FEATURE: "user_id", ITEM_FEATURE: "item_id"}
    sources |= {f: f for f in layout.pooled if f != USER_FEATURE}
    frame = frame.with_columns(
        *[package.vocabs[name].encode(frame[col]).alias(index_column(name))
          for name, col in sources.items()],
        # Truths are unknown when serving: the loader wants the columns, the scores ignore them.
        *[pl.lit(0, dtype=pl.Int8).alias(label) for label in layout.labels],
        *[pl.lit(None, dtype=pl.Int8).alias(r) for r in layout.retention_labels],
        pl.lit(0, dtype=pl.Int64).alias("user_key"),
        pl.lit(SERVE_SPLIT).alias("split"),
    )
    prep = {**package.prep, "fractions": tuple(package.prep.get("fractions", (0.8, 0.1, 0.1)))}
    return Prepared(dataset=package.catalogue, frame=frame, vocabs=package.vocabs, layout=layout,
                    config=PrepareConfig(**prep))


def _user_snapshot(package: Package) -> pl.DataFrame:
    """The user state under private names, for the join on ``user_id``."""
    users = package.users
    features = [f"user_{c}" for c in package.schema.user_features]
    return users.select("user_id", *[pl.col(c).alias(f"_snap_{c}") for c in features],
                        pl.col(snapshot.ROWS).alias("_user_rows"),
                        pl.col(snapshot.POSITIVES).alias("_user_positives"),
                        pl.col(snapshot.HISTORY).alias("_snap_history"))


def _user_features(frame: pl.DataFrame, package: Package) -> list[pl.Expr]:
    """``user_<c>``: the request's value where it sends one, else the snapshot's; a user in
    neither keeps null (OOV), or an empty bag for a multi-valued feature, as in training."""
    exprs = []
    for f in (f"user_{c}" for c in package.schema.user_features):
        snap = pl.col(f"_snap_{f}")
        expr = pl.coalesce(pl.col(f), snap) if f in frame.columns else snap
        if is_bag(frame.schema[f"_snap_{f}"]):
            expr = expr.fill_null(pl.lit([], dtype=BAG_DTYPE))
        exprs.append(expr.alias(f))
    return exprs
