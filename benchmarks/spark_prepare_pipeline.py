"""The Spark preparation job's steps: read the contract dataset, derive, encode, write the shards.

Called by ``spark_prepare_job.py`` (the entry point; settings are its parsed arguments). Each
step is the Spark twin of the project function named in its docstring.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from spark_prepare_derive import (
    JobError,
    add_cold_flags,
    add_history,
    add_retention,
    add_running_rate,
    add_split,
    add_user_key,
    build_vocab,
    encode,
    is_bag,
    log_days,
    vocab_frame,
)
from spark_prepare_layout import (
    canonical_categorical,
    manifest_text,
    polars_dtype,
    read_spec,
    resolve_table,
    shard_columns,
    spec_fingerprint,
    spec_to_toml,
)

SPLITS = ("train", "valid", "test")


# ---- reading the contract dataset (data/dataset.py) -------------------------------------------
def read_table(spark: SparkSession, path: Path) -> DataFrame:
    """A table with ``_row`` (Int64): its rows' positions in the file, whatever the splits."""
    if path.suffix == ".csv":
        df = spark.read.csv(str(path), header=True, inferSchema=True)
        # One file's splits are numbered in file order; the schema is kept, not inferred again.
        schema = T.StructType([*df.schema.fields, T.StructField("_row", T.LongType(), False)])
        return spark.createDataFrame(df.rdd.zipWithIndex().map(_numbered_row), schema)
    return spark.read.parquet(str(path)).select("*", F.col("_metadata.row_index").alias("_row"))


def _numbered_row(pair: tuple) -> tuple:
    """(row, index) from ``zipWithIndex`` → the row's values with the index appended."""
    row, index = pair
    return (*row, index)


def timestamp_seconds(df: DataFrame, column: str, where: str) -> F.Column:
    dtype = df.schema[column].dataType
    if isinstance(dtype, T.IntegralType | T.FloatType | T.DoubleType):
        return F.col(column).cast(T.LongType())
    if isinstance(dtype, T.TimestampType | T.TimestampNTZType):
        return F.unix_seconds(F.col(column).cast(T.TimestampType()))
    if isinstance(dtype, T.DateType):
        return F.unix_date(F.col(column)).cast(T.LongType()) * 86_400
    raise JobError(f"{where}, column {column}: timestamps of type {dtype.simpleString()} are not "
                   "supported by the Spark job (use integer seconds or a timestamp column)")


def load(spark: SparkSession, root: Path, spec: dict) -> tuple[DataFrame, DataFrame, list[Path]]:
    """The canonical interactions (with the item and user categoricals joined on) and items."""
    inter_s, items_s, users_s = spec["interactions"], spec["items"], spec.get("users")
    items_path = resolve_table(root, items_s["file"], "items.file")
    raw_items = read_table(spark, items_path)
    items = raw_items.select(
        F.col("_row").alias("item_row"), F.col(items_s["id"]).alias("item_id"),
        *[canonical_categorical(raw_items, c, items_s["multi_valued"].get(c), "item_")
          for c in items_s["categorical"]])
    inter_path = resolve_table(root, inter_s["file"], "interactions.file")
    raw = read_table(spark, inter_path)
    item_type = raw_items.schema[items_s["id"]].dataType
    inter = raw.select(
        F.col("_row").alias("row_id"), F.col(inter_s["user"]).alias("user_id"),
        F.col(inter_s["item"]).cast(item_type).alias("item_id"),
        timestamp_seconds(raw, inter_s["timestamp"], str(inter_path)).alias("ts"),
        *[F.col(c).cast(T.ByteType()).alias(c) for c in inter_s["labels"]],
        *[canonical_categorical(raw, c, inter_s["multi_valued"].get(c), "ctx_")
          for c in inter_s["categorical"]])
    inter = inter.join(items, "item_id", "left")
    missing = inter.filter(F.col("item_row").isNull()).select("row_id", "item_id").orderBy("row_id").first()
    if missing is not None:
        raise JobError(f"{inter_path}, column {inter_s['item']}, row {missing['row_id'] + 1}: item "
                       f"'{missing['item_id']}' is not in the item table ({items_path.name})")
    tables = [inter_path, items_path]
    if users_s is not None:
        users_path = resolve_table(root, users_s["file"], "users.file")
        raw_users = read_table(spark, users_path)
        users = raw_users.select(
            F.col(users_s["id"]).cast(inter.schema["user_id"].dataType).alias("user_id"),
            *[canonical_categorical(raw_users, c, users_s["multi_valued"].get(c), "user_")
              for c in users_s["categorical"]])
        inter = inter.join(users, "user_id", "left")
        empty = F.array().cast(T.ArrayType(T.StringType()))
        for f in users.columns[1:]:
            if is_bag(users, f):  # a user missing from the table has an empty bag
                inter = inter.withColumn(f, F.coalesce(F.col(f), empty))
        tables.append(users_path)
    return inter, items, tables


# ---- the preparation (data/prepare.py::prepare) -------------------------------------------------
def derive(frame: DataFrame, spec: dict, args: argparse.Namespace, where: str) -> DataFrame:
    label = spec["interactions"]["labels"][0]
    days = log_days(frame)
    frame = add_split(frame, args.split, args.fractions, args.tail_days, days, where)
    frame = add_history(frame, label, args.max_history)
    if args.prior_rate:
        frame = add_running_rate(frame, label, "user_id", ("prior_logit", "prior_rate", "prior_rows"))
    if args.item_prior_rate:
        frame = add_running_rate(frame, label, "item_row",
                                 ("prior_item_logit", "prior_item_rate", "prior_item_rows"))
    frame = add_cold_flags(frame)
    if args.retention:
        frame = add_retention(frame, days[1])
    return add_user_key(frame)


def pooled_features(spec: dict, args: argparse.Namespace) -> list[str]:
    """``data.prepare.pooled_features``: user, user_<c>, item_<c>, ctx_<c>, the prior buckets."""
    users = spec.get("users") or {"categorical": []}
    return ["user", *[f"user_{c}" for c in users["categorical"]],
            *[f"item_{c}" for c in spec["items"]["categorical"]],
            *[f"ctx_{c}" for c in spec["interactions"]["categorical"]],
            *(["prior_rate", "prior_rows"] if args.prior_rate else []),
            *(["prior_item_rate", "prior_item_rows"] if args.item_prior_rate else [])]


def encode_all(spark: SparkSession, frame: DataFrame, spec: dict, args: argparse.Namespace
               ) -> tuple[DataFrame, dict[str, dict], dict[str, DataFrame]]:
    """Builds every vocabulary on the train rows and adds the ``idx_<feature>`` columns."""
    sources = {"user": "user_id", "item": "item_id"}
    sources |= {f: f for f in pooled_features(spec, args) if f != "user"}
    train = frame.filter(F.col("split") == "train")
    vocabs, tables = {}, {}
    for name, column in sources.items():
        values = build_vocab(train, column, args.min_count)
        dtype = frame.schema[column].dataType
        dtype = dtype.elementType if isinstance(dtype, T.ArrayType) else dtype
        vocabs[name] = {"name": name, "dtype": polars_dtype(dtype), "values": values}
        tables[name] = vocab_frame(spark, values, dtype)
        frame = encode(frame, column, tables[name], f"idx_{name}")
    return frame, vocabs, tables


def layout_dict(spec: dict, args: argparse.Namespace, frame: DataFrame, vocabs: dict[str, dict],
                num_items: int) -> dict:
    """``FeatureLayout.to_dict()`` in its key order."""
    pooled = pooled_features(spec, args)
    return {"pooled": {f: len(vocabs[f]["values"]) + 1 for f in pooled},
            "item_vocab_size": len(vocabs["item"]["values"]) + 1,
            "max_history": args.max_history, "labels": list(spec["interactions"]["labels"]),
            "retention_labels": ["return_7d", "return_14d"] if args.retention else [],
            "num_items": num_items,
            "dense": [*(["prior_logit"] if args.prior_rate else []),
                      *(["prior_item_logit"] if args.item_prior_rate else [])],
            "bags": [f for f in pooled if f in frame.columns and is_bag(frame, f)]}


# ---- writing (data/shards.py::write_shards) -----------------------------------------------------
def write_split(frame: DataFrame, split: str, columns: dict[str, T.DataType], buckets: int,
                tmp: Path) -> list[int]:
    """One file per user bucket, rows in row_id order; returns the rows of each file."""
    rows = frame.filter(F.col("split") == split).select(
        *[F.col(c).cast(t).alias(c) for c, t in columns.items()],
        F.pmod(F.col("user_key"), F.lit(buckets)).alias("_bucket"))
    staged = tmp / "_spark" / split
    # All rows of a bucket go to one task, sorted by row_id there: one ordered file per bucket.
    (rows.repartition(buckets, "_bucket").sortWithinPartitions("_bucket", "row_id")
     .write.partitionBy("_bucket").option("compression", "zstd").parquet(str(staged)))
    empty = tmp / "_spark" / f"{split}-empty"
    schema = rows.drop("_bucket").schema  # an empty bucket still has its file, with the schema
    spark = frame.sparkSession
    spark.createDataFrame(spark.sparkContext.emptyRDD(), schema).repartition(1).write.option(
        "compression", "zstd").parquet(str(empty))
    counts = {r["_bucket"]: r["count"] for r in rows.groupBy("_bucket").count().collect()}
    (tmp / split).mkdir()
    for b in range(buckets):
        source = staged / f"_bucket={b}" if b in counts else empty
        parts = sorted(source.glob("part-*.parquet"))
        if len(parts) != 1:
            raise RuntimeError(f"{source}: expected one part file, found {len(parts)}")
        shutil.copyfile(parts[0], tmp / split / f"part-{b:05d}.parquet")
    return [counts.get(b, 0) for b in range(buckets)]


def write_items(items: DataFrame, item_vocab: DataFrame, tmp: Path) -> None:
    id_type = T.LongType() if isinstance(items.schema["item_id"].dataType, T.IntegralType) else T.StringType()
    frame = encode(items, "item_id", item_vocab, "idx_item").select(
        F.col("item_row").cast(T.LongType()), F.col("item_id").cast(id_type), "idx_item")
    staged = tmp / "_spark" / "items"
    frame.coalesce(1).sortWithinPartitions("item_row").write.option("compression", "zstd").parquet(str(staged))
    shutil.move(str(next(staged.glob("part-*.parquet"))), tmp / "items.parquet")


def staging_dir(out: Path) -> Path:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise JobError(f"{out}: already exists and is not an empty directory; choose another output directory")
    out.absolute().parent.mkdir(parents=True, exist_ok=True)
    tmp = out.absolute().parent / f".{out.name}.partial-spark"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def run(args: argparse.Namespace, prepare: dict, spark: SparkSession) -> Path:
    """The whole job; returns the shard directory. ``prepare``: the settings as
    ``PrepareConfig.to_dict()`` (recorded in the manifest)."""
    root = Path(args.data).resolve()
    spec, spec_path = read_spec(root)
    out = Path(args.out)
    tmp = staging_dir(out)
    try:
        inter, items, tables = load(spark, root, spec)
        inter = inter.persist()  # the split, history and rate steps all start from it
        frame = derive(inter, spec, args, str(spec_path)).persist()
        frame, vocabs, vocab_tables = encode_all(spark, frame, spec, args)
        frame = frame.persist()
        num_items = items.count()
        layout = layout_dict(spec, args, frame, vocabs, num_items)
        columns = shard_columns(layout, frame.schema)
        split_rows = {s: write_split(frame, s, columns, args.buckets, tmp) for s in SPLITS}
        write_items(items, vocab_tables["item"], tmp)
        shutil.rmtree(tmp / "_spark")
        dataset = {"fingerprint": spec_fingerprint(spec_path, tables), "name": spec["name"],
                   "labels": list(spec["interactions"]["labels"]),
                   "primary_label": spec["interactions"]["labels"][0],
                   "spec": spec_to_toml(spec), "dir": str(root)}
        (tmp / "manifest.json").write_text(manifest_text(
            args.buckets, prepare, layout, vocabs, dataset, split_rows), encoding="utf-8")
        if out.is_dir():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


