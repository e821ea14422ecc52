"""From a loaded dataset to the model-ready frame: split, history, flags, labels, vocabularies.

``prepare`` is the one place that decides which derived column comes from which function, so
that training, evaluation and the benchmarks all see the same data (docs/design.md §4.4).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import polars as pl

from data.bags import BAG_DTYPE, is_bag
from data.batch import ITEM_FEATURE, RETENTION_LABELS, USER_FEATURE, FeatureLayout
from data.coldstart import add_cold_flags
from data.dataset import Dataset
from data.errors import DataError, Problem
from data.prior_rate import (
    ITEM_LOGIT_FEATURE,
    ITEM_PRIOR_FEATURES,
    LOGIT_FEATURE,
    PRIOR_FEATURES,
    add_item_prior_rate,
    add_prior_rate,
)
from data.retention import SECONDS_PER_DAY, add_retention_labels
from data.sequences import add_history
from data.split import leave_last_out, time_split, user_time_split
from data.vocab import Vocab

SPLIT_METHODS = ("time", "user_time", "leave_last_out")


def index_column(feature: str) -> str:
    """Name of the column holding the vocabulary indices of ``feature``: ``idx_<feature>``."""
    return f"idx_{feature}"


@dataclass
class PrepareConfig:
    """How derived data is made.

    Attributes:
        max_history: L, the longest behaviour sequence kept per row.
        split: "time" (global 80/10/10 by time), "user_time" (each user's rows 80/10/10 by
            time) or "leave_last_out" (per user: last row test, the one before valid).
        fractions: train/valid/test fractions of the time and user_time splits.
        retention: derive the retention labels (return_7d/14d, lt7/14).
        min_count: a value needs this many train rows to get its own vocabulary index.
        tail_days: rows of the log's last ``tail_days`` days get split ``"tail"``: they are in
            no train/valid/test split, but they are the future that labels the retention of the
            rows before them (and they feed histories). With 0, the test split is the log's
            end and every test row is censored for retention; 14 lets test rows mature.
        prior_rate: derive the ``prior_rate`` and ``prior_rows`` pooled features and the
            ``prior_logit`` dense feature (the user's smoothed rate of the primary label, and
            row count, before each row; ``data.prior_rate``).
        item_prior_rate: derive the same three for the target item (its smoothed rate over
            every user's earlier rows): ``prior_item_rate``, ``prior_item_rows`` (pooled) and
            ``prior_item_logit`` (dense).
    """

    max_history: int = 50
    split: str = "time"
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    retention: bool = True
    min_count: int = 1
    tail_days: int = 0
    prior_rate: bool = True
    item_prior_rate: bool = False

    def __post_init__(self) -> None:
        if self.tail_days < 0:
            raise ValueError(f"tail_days must be >= 0, got {self.tail_days}")
        if self.split not in SPLIT_METHODS:
            raise ValueError(f"split must be one of {SPLIT_METHODS}, got {self.split!r}")
        if self.max_history < 1 or self.min_count < 1:
            raise ValueError("max_history and min_count must be >= 1")
        self.fractions = tuple(float(f) for f in self.fractions)

    def to_dict(self) -> dict:
        return {**asdict(self), "fractions": list(self.fractions)}


@dataclass
class Prepared:
    """A dataset with every derived column, its vocabularies and the model's feature layout.

    ``frame`` holds the canonical interaction columns plus: the joined ``item_<c>`` and
    ``user_<c>`` categoricals, ``split``, ``hist_rows``, ``cold_item``, ``cold_user``, the
    retention columns and ``prior_logit`` / ``prior_rate`` / ``prior_rows`` (and their
    ``prior_item_*`` counterparts; when configured),
    ``idx_<feature>`` per vocabulary and ``user_key``.
    """

    dataset: Dataset
    frame: pl.DataFrame
    vocabs: dict[str, Vocab]
    layout: FeatureLayout
    config: PrepareConfig = field(default_factory=PrepareConfig)

    def item_index_by_row(self) -> np.ndarray:
        """Item vocabulary index of every item table row (0 for items never seen in train):
        maps ``hist_rows`` to the ``hist_item`` ID feature."""
        return self.vocabs[ITEM_FEATURE].encode(self.dataset.items["item_id"]).to_numpy()


def join_side_features(dataset: Dataset) -> pl.DataFrame:
    """Interactions with the target item's and the user's categoricals joined on."""
    inter = dataset.interactions
    if dataset.item_features:
        items = dataset.items.select("item_row", *dataset.item_features)
        inter = inter.join(items, on="item_row", how="left", maintain_order="left")
    if dataset.users is not None and dataset.user_features:
        users = dataset.users.select(
            pl.col("user_id").cast(inter.schema["user_id"], strict=False), *dataset.user_features
        )
        # A user missing from the user table keeps null categoricals, encoded as OOV (an empty
        # bag for a multi-valued one).
        inter = inter.join(users, on="user_id", how="left", maintain_order="left")
        inter = inter.with_columns(pl.col(f).fill_null(pl.lit([], dtype=BAG_DTYPE))
                                   for f in dataset.user_features if is_bag(inter.schema[f]))
    return inter


def tail_mask(last_day: int, tail_days: int) -> pl.Expr:
    """True for the rows of the log's last ``tail_days`` days (none with 0)."""
    return (pl.col("ts") // SECONDS_PER_DAY > last_day - tail_days) if tail_days else pl.lit(False)


def empty_head_error(dataset: Dataset, config: PrepareConfig, first_day: int,
                     last_day: int) -> DataError:
    """The error for a ``data.tail_days`` that leaves no row before the tail: a property of the
    data (its time span), so a DataError."""
    spec = dataset.spec.interactions
    return DataError(Problem(str(dataset.root / spec.file), f"data.tail_days={config.tail_days} "
                             "leaves no rows before the tail (the log spans "
                             f"{last_day - first_day + 1} days)", column=spec.timestamp))


def add_split(frame: pl.DataFrame, config: PrepareConfig, last_day: int,
              time_cuts: tuple | None = None) -> pl.DataFrame:
    """Adds ``split``; rows of the last ``tail_days`` days are ``"tail"`` (see PrepareConfig).

    ``last_day``: the whole log's last day. ``time_cuts``: the whole log's
    ``data.split.time_cut_keys`` when ``frame`` holds only some users (bounded-memory
    preparation); None computes them from ``frame``. The caller has checked that the tail
    leaves rows before it (``empty_head_error``).
    """

    def split(f: pl.DataFrame) -> pl.DataFrame:
        if config.split == "time":
            return time_split(f, config.fractions, cut_keys=time_cuts)
        if config.split == "user_time":
            return user_time_split(f, config.fractions)
        return leave_last_out(f)

    if config.tail_days == 0:
        return split(frame)
    in_tail = tail_mask(last_day, config.tail_days)
    head = frame.filter(~in_tail)
    tail = frame.filter(in_tail).with_columns(pl.lit("tail").alias("split"))
    return pl.concat([split(head), tail], how="vertical_relaxed").sort("row_id")


def add_user_derived(frame: pl.DataFrame, label: str, config: PrepareConfig) -> pl.DataFrame:
    """The columns derived from each user's own earlier rows: the behaviour sequence and, when
    configured, the prior rate. Per user, so a frame holding some users' whole logs gives
    those users' rows exactly what the whole log would."""
    frame = add_history(frame, label, config.max_history)
    return add_prior_rate(frame, label) if config.prior_rate else frame


def vocab_sources(dataset: Dataset, config: PrepareConfig) -> dict[str, str]:
    """Vocabulary name → the column it is built from."""
    sources = {USER_FEATURE: "user_id", ITEM_FEATURE: "item_id"}
    return sources | {f: f for f in pooled_features(dataset, config) if f != USER_FEATURE}


def feature_layout(dataset: Dataset, config: PrepareConfig, vocabs: dict[str, Vocab],
                   schema: pl.Schema) -> FeatureLayout:
    """The model's feature layout, from the vocabularies and the prepared frame's schema."""
    pooled = pooled_features(dataset, config)
    return FeatureLayout(
        pooled={name: vocabs[name].size for name in pooled},
        item_vocab_size=vocabs[ITEM_FEATURE].size,
        max_history=config.max_history,
        labels=tuple(dataset.labels),
        retention_labels=RETENTION_LABELS if config.retention else (),
        num_items=dataset.items.height,
        dense=dense_features(config),
        bags=tuple(f for f in pooled if f in schema and is_bag(schema[f])),
    )


def pooled_features(dataset: Dataset, config: PrepareConfig) -> list[str]:
    """Pooled ID features in FeatureLayout order: user, user_<c>, item_<c>, ctx_<c>, then the
    derived prior_rate and prior_rows when ``config.prior_rate``, and prior_item_rate and
    prior_item_rows when ``config.item_prior_rate``."""
    derived = ((list(PRIOR_FEATURES) if config.prior_rate else [])
               + (list(ITEM_PRIOR_FEATURES) if config.item_prior_rate else []))
    return [USER_FEATURE, *dataset.user_features, *dataset.item_features,
            *dataset.context_features, *derived]


def dense_features(config: PrepareConfig) -> tuple[str, ...]:
    """The dense (float) features in ``FeatureLayout.dense`` order."""
    return (((LOGIT_FEATURE,) if config.prior_rate else ())
            + ((ITEM_LOGIT_FEATURE,) if config.item_prior_rate else ()))


def prepare(dataset: Dataset, config: PrepareConfig | None = None,
            vocabs: dict[str, Vocab] | None = None) -> Prepared:
    """Derives split, history and prior rate (primary label), cold flags, retention labels and
    vocabularies.

    ``vocabs``: use these vocabularies (a trained run's) instead of building them on train, so
    ids are encoded exactly as the model saw them.
    """
    config = config or PrepareConfig()
    frame = join_side_features(dataset)
    day = pl.col("ts") // SECONDS_PER_DAY
    first_day, last_day = frame.select(day.min().alias("first"), day.max().alias("last")).row(0)
    if config.tail_days and frame.filter(~tail_mask(last_day, config.tail_days)).height == 0:
        raise empty_head_error(dataset, config, first_day, last_day)
    frame = add_split(frame, config, last_day)
    frame = add_user_derived(frame, dataset.primary_label, config)
    if config.item_prior_rate:
        frame = add_item_prior_rate(frame, dataset.primary_label)
    frame = add_cold_flags(frame)
    if config.retention:
        frame = add_retention_labels(frame, last_day=last_day)

    # Vocabularies see train rows only: an id first met in valid/test is OOV, as it would be
    # for a model serving traffic it was not trained on.
    sources = vocab_sources(dataset, config)
    train = frame.filter(pl.col("split") == "train")
    if vocabs is None:
        vocabs = {name: Vocab.build(name, train[col], config.min_count) for name, col in sources.items()}
    missing = set(sources) - set(vocabs)
    if missing:
        raise ValueError(f"vocabularies missing for features {sorted(missing)}")
    frame = frame.with_columns(
        *[vocabs[name].encode(frame[col]).alias(index_column(name)) for name, col in sources.items()],
        # Dense over the whole log (cold users too), so GAUC can group any split by it.
        (pl.col("user_id").rank("dense").cast(pl.Int64) - 1).alias("user_key"),
    )
    layout = feature_layout(dataset, config, vocabs, frame.schema)
    return Prepared(dataset=dataset, frame=frame, vocabs=vocabs, layout=layout, config=config)
