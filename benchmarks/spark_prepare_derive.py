"""The derived columns of the Spark preparation job, each the Spark twin of one ``data/`` module.

Runs inside ``.venv-spark`` (pyspark only; nothing from the project is imported, so a cluster
needs this file and ``spark_prepare_job.py`` only). Every function reproduces its polars
reference exactly (``benchmarks/spark_prepare.py`` compares every value):

- ``add_split``: ``data.prepare._split`` with ``data.split`` (time, user_time, leave_last_out;
  the ``tail`` days);
- ``add_history``: ``data.sequences.add_history``;
- ``add_running_rate``: ``data.prior_rate`` (user and item prior rates);
- ``add_cold_flags``: ``data.coldstart``; ``add_retention``: ``data.retention``;
- ``build_vocab`` / ``encode``: ``data.vocab.Vocab``; ``add_user_key``: ``prepare``'s user_key.

Frames are ``pyspark.sql.DataFrame`` of the canonical interaction columns (``row_id``,
``user_id``, ``item_id``, ``ts``, labels, ``item_row``, categoricals), one row per interaction.
Nothing here collects rows to the driver except what the manifest holds anyway (vocabularies)
and two sort keys of the time split.
"""

from __future__ import annotations

import math

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

SECONDS_PER_DAY = 86_400
HORIZONS = (7, 14)
MAX_LOGIT = 4.0
LOGIT_STEP = 0.5
LOGIT_BUCKETS = 16
NO_PRIOR = LOGIT_BUCKETS
MAX_ROWS_BUCKET = 16


def empty_longs() -> Column:
    """An empty List(Int64) (a function: a Column needs a running session)."""
    return F.array().cast(T.ArrayType(T.LongType()))


class JobError(ValueError):
    """Bad input or an unsupported setting: one line naming the file or setting."""


def day_of() -> Column:
    """``floor(ts / 86400)`` in exact integer arithmetic (polars ``//``, floor for negatives)."""
    return F.expr(f"(ts - pmod(ts, {SECONDS_PER_DAY})) div {SECONDS_PER_DAY}")


def positive(label: str) -> Column:
    """1 where ``label == 1``, else 0 (a null label is not a positive)."""
    return F.coalesce(F.col(label) == 1, F.lit(False)).cast(T.LongType())


def _strictly_earlier(key: str) -> Window:
    """The rows of ``key`` whose timestamp is strictly earlier than the current row's."""
    return Window.partitionBy(key).orderBy("ts").rangeBetween(Window.unboundedPreceding, -1)


# ---- split (data/split.py, data/prepare.py::_split) ------------------------------------------
def split_cuts(n: int, fractions: tuple[float, float, float]) -> tuple[int, int]:
    """``data.split.split_cuts``: cumulative fractions rounded half up."""
    return math.floor(n * fractions[0] + 0.5), math.floor(n * (fractions[0] + fractions[1]) + 0.5)


def _keys_at(frame: DataFrame, positions: list[int]) -> dict[int, tuple[int, int]]:
    """The (ts, row_id) at each position of the frame in (ts, row_id) order: a distributed sort
    numbered by ``zipWithIndex``, so no partition holds the whole log."""
    if not positions:
        return {}
    ranked = frame.select("ts", "row_id").orderBy("ts", "row_id").rdd.zipWithIndex().toDF(["key", "pos"])
    hits = ranked.filter(F.col("pos").isin(positions)).collect()
    return {int(r["pos"]): (int(r["key"]["ts"]), int(r["key"]["row_id"])) for r in hits}


def time_split(frame: DataFrame, fractions: tuple[float, float, float]) -> DataFrame:
    n = frame.count()
    cut_valid, cut_test = split_cuts(n, fractions)
    keys = _keys_at(frame, sorted({p for p in (cut_valid, cut_test) if p < n}))

    def earlier_than(position: int) -> Column:
        if position >= n:
            return F.lit(True)
        ts, row_id = keys[position]
        return (F.col("ts") < ts) | ((F.col("ts") == ts) & (F.col("row_id") < row_id))

    return frame.withColumn("split", F.when(earlier_than(cut_valid), "train")
                            .when(earlier_than(cut_test), "valid").otherwise("test"))


def user_time_split(frame: DataFrame, fractions: tuple[float, float, float]) -> DataFrame:
    user = Window.partitionBy("user_id")
    position = F.row_number().over(user.orderBy("ts", "row_id")) - 1
    n = F.count(F.lit(1)).over(user)
    cut_valid = F.floor(n * F.lit(fractions[0]) + 0.5)
    cut_test = F.floor(n * F.lit(fractions[0] + fractions[1]) + 0.5)
    return frame.withColumn("split", F.when(position < cut_valid, "train")
                            .when(position < cut_test, "valid").otherwise("test"))


def leave_last_out(frame: DataFrame) -> DataFrame:
    from_end = F.row_number().over(
        Window.partitionBy("user_id").orderBy(F.col("ts").desc(), F.col("row_id").desc())) - 1
    return frame.withColumn("split", F.when(from_end == 0, "test").when(from_end == 1, "valid")
                            .otherwise("train"))


def log_days(frame: DataFrame) -> tuple[int, int]:
    """The first and last day of the log (one pass; the tail and retention censoring use them)."""
    day = day_of()
    first_day, last_day = frame.agg(F.min(day), F.max(day)).first()
    return int(first_day), int(last_day)


def add_split(frame: DataFrame, method: str, fractions: tuple[float, float, float],
              tail_days: int, days: tuple[int, int], where: str) -> DataFrame:
    """Adds ``split``; rows of the log's last ``tail_days`` days are ``"tail"``. ``days``: the
    log's first and last day (``log_days``)."""
    methods = {"time": lambda f: time_split(f, fractions),
               "user_time": lambda f: user_time_split(f, fractions), "leave_last_out": leave_last_out}
    split = methods[method]
    if tail_days == 0:
        return split(frame)
    day = day_of()
    first_day, last_day = days
    in_tail = day > F.lit(last_day - tail_days)
    head = frame.filter(~in_tail)
    if head.isEmpty():
        raise JobError(f"{where}: --tail-days {tail_days} leaves no rows before the tail (the log "
                       f"spans {last_day - first_day + 1} days)")
    tail = frame.filter(in_tail).withColumn("split", F.lit("tail"))
    return split(head).unionByName(tail)


# ---- history (data/sequences.py) ---------------------------------------------------------------
def add_history(frame: DataFrame, label: str, max_len: int) -> DataFrame:
    """Adds ``hist_rows``: the item rows of the user's most recent ``max_len`` positives with a
    strictly earlier timestamp, most recent first.

    A row's earlier positives are the first ``seen`` of the user's positives in (ts, row_id)
    order, ``seen`` a running count over the strictly-earlier range; its history is a slice of
    the user's positive list, so no row ever gathers more than ``max_len`` items.
    """
    seen = F.coalesce(F.sum(positive(label)).over(_strictly_earlier("user_id")), F.lit(0))
    frame = frame.withColumn("_seen", seen)
    positives = (frame.filter(positive(label) == 1).groupBy("user_id")
                 .agg(F.sort_array(F.collect_list(F.struct("ts", "row_id", "item_row"))).alias("_p"))
                 .select("user_id", F.col("_p.item_row").cast(T.ArrayType(T.LongType())).alias("_items")))
    start = F.greatest(F.col("_seen") - max_len, F.lit(0)) + 1
    length = F.least(F.col("_seen"), F.lit(max_len))
    history = F.when(F.col("_seen") > 0, F.reverse(F.slice("_items", start, length))).otherwise(empty_longs())
    return (frame.join(positives, "user_id", "left").withColumn("hist_rows", history)
            .drop("_seen", "_items"))


# ---- prior rates (data/prior_rate.py) -----------------------------------------------------------
def add_running_rate(frame: DataFrame, label: str, key: str, names: tuple[str, str, str]) -> DataFrame:
    """Adds the (logit, rate bucket, rows bucket) columns ``names`` over ``key``'s rows with a
    strictly earlier timestamp (``data.prior_rate.running_counts`` + ``rate_features``)."""
    window = _strictly_earlier(key)
    rows = F.count(F.lit(1)).over(window)
    positives = F.coalesce(F.sum(positive(label)).over(window), F.lit(0))
    frame = frame.withColumn("_rows", rows).withColumn("_positives", positives)
    rate = (F.col("_positives") + 1) / (F.col("_rows") + 2)
    logit = F.log(rate / (F.lit(1.0) - rate))
    bucket = F.floor(logit / LOGIT_STEP) + LOGIT_BUCKETS // 2
    # floor(log2(rows)) exactly: the binary digits of rows, less one.
    log2_rows = F.length(F.bin(F.col("_rows"))) - 1
    logit_name, rate_name, rows_name = names
    return frame.select(
        *[c for c in frame.columns if c not in ("_rows", "_positives")],
        F.least(F.greatest(logit, F.lit(-MAX_LOGIT)), F.lit(MAX_LOGIT)).cast(T.FloatType()).alias(logit_name),
        F.when(F.col("_rows") == 0, F.lit(NO_PRIOR))
        .otherwise(F.least(F.greatest(bucket, F.lit(0)), F.lit(LOGIT_BUCKETS - 1)))
        .cast(T.LongType()).alias(rate_name),
        F.when(F.col("_rows") == 0, F.lit(0))
        .otherwise(F.least(log2_rows + 1, F.lit(MAX_ROWS_BUCKET)))
        .cast(T.LongType()).alias(rows_name),
    )


# ---- cold flags and retention (data/coldstart.py, data/retention.py) ----------------------------
def add_cold_flags(frame: DataFrame) -> DataFrame:
    """``cold_item`` / ``cold_user``: the id occurs in no train row."""
    train = frame.filter(F.col("split") == "train")
    for column, flag in (("item_id", "cold_item"), ("user_id", "cold_user")):
        seen = train.select(column).distinct().withColumn("_in_train", F.lit(True))
        frame = (frame.join(seen, column, "left")
                 .withColumn(flag, F.col("_in_train").isNull()).drop("_in_train"))
    return frame


def add_retention(frame: DataFrame, last_day: int) -> DataFrame:
    """``return_<N>d`` (Int8) and ``lt<N>`` (Int32) for N in 7, 14: whether and on how many
    distinct days the user was active in days (d, d+N]; null where d + N passes the log's last
    day ``last_day`` (censored)."""
    day = day_of()
    active = frame.select("user_id", day.alias("_day")).distinct()
    for horizon in HORIZONS:
        window = Window.partitionBy("user_id").orderBy("_day").rangeBetween(1, horizon)
        days = F.count(F.lit(1)).over(window)
        censored = F.col("_day") + horizon > F.lit(last_day)
        active = active.withColumn(f"return_{horizon}d", F.when(censored, F.lit(None))
                                   .otherwise((days > 0).cast(T.ByteType())).cast(T.ByteType()))
        active = active.withColumn(f"lt{horizon}", F.when(censored, F.lit(None))
                                   .otherwise(days).cast(T.IntegerType()))
    return frame.withColumn("_day", day).join(active, ["user_id", "_day"], "left").drop("_day")


# ---- vocabularies and keys (data/vocab.py, data/prepare.py) -------------------------------------
def build_vocab(train: DataFrame, column: str, min_count: int) -> list:
    """The column's train values seen at least ``min_count`` times (every element of a bag),
    nulls dropped, sorted (numbers numerically, strings by UTF-8 bytes): index i + 1."""
    values = F.explode(column) if is_bag(train, column) else F.col(column)
    counts = train.select(values.alias("value")).dropna().groupBy("value").count()
    kept = counts.filter(F.col("count") >= min_count).select("value").orderBy("value")
    return [r["value"] for r in kept.collect()]


def is_bag(frame: DataFrame, column: str) -> bool:
    return isinstance(frame.schema[column].dataType, T.ArrayType)


def vocab_frame(spark: SparkSession, values: list, dtype: T.DataType) -> DataFrame:
    """(value, index) with index 1..n in vocabulary order."""
    schema = T.StructType([T.StructField("value", dtype), T.StructField("index", T.LongType())])
    return spark.createDataFrame([(v, i + 1) for i, v in enumerate(values)], schema)


def encode(frame: DataFrame, column: str, vocab: DataFrame, out: str) -> DataFrame:
    """Adds ``out``: the vocabulary index of ``column`` (0 when unseen or null); for a bag, the
    list of its elements' indices, bag length and order kept (a null bag gives an empty one)."""
    if not is_bag(frame, column):
        joined = frame.join(vocab.withColumnRenamed("value", "_v").withColumnRenamed("index", "_i"),
                            F.col(column) == F.col("_v"), "left")
        return joined.withColumn(out, F.coalesce(F.col("_i"), F.lit(0)).cast(T.LongType())).drop("_v", "_i")
    elements = frame.select("row_id", F.posexplode(column).alias("_pos", "value"))
    indexed = (elements.join(vocab, "value", "left")
               .select("row_id", "_pos", F.coalesce(F.col("index"), F.lit(0)).alias("_i")))
    bags = (indexed.groupBy("row_id").agg(F.sort_array(F.collect_list(F.struct("_pos", "_i"))).alias("_b"))
            .select("row_id", F.col("_b._i").cast(T.ArrayType(T.LongType())).alias(out)))
    return frame.join(bags, "row_id", "left").withColumn(out, F.coalesce(F.col(out), empty_longs()))


def add_user_key(frame: DataFrame) -> DataFrame:
    """``user_key``: the 0-based dense rank of ``user_id`` over the whole log, numbered by a
    distributed sort of the distinct users."""
    users = frame.select("user_id").distinct().orderBy("user_id").rdd.zipWithIndex().toDF(["u", "user_key"])
    users = users.select(F.col("u.user_id").alias("user_id"), F.col("user_key").cast(T.LongType()))
    return frame.join(users, "user_id", "left")
