"""A Spark job that writes prepared shards (docs/prepared_shards.md) from a contract dataset.

The same files as ``recsys data shard`` / ``data.shards.write_shards(prepare(...))``: per split
and user bucket one Parquet file with the same rows, columns, types and order, ``items.parquet``
and ``manifest.json`` (vocabularies, layout, prepare settings, the dataset's fingerprint; all
computed here: the job needs nothing from the project). Standalone: pyspark and the Python
standard library only, so a cluster runs it with

    cd benchmarks && spark-submit \\
        --py-files spark_prepare_pipeline.py,spark_prepare_derive.py,spark_prepare_layout.py \\
        spark_prepare_job.py --data DATASET_DIR --out PREPARED_DIR --buckets 16

(the four files are the whole job; in client mode the driver also finds its three modules
beside the script).

The settings default to the presets' ``[data]`` section (max_history 20, time split, tail_days
14, prior_rate and item_prior_rate on, retention on, min_count 1). The dataset must be a valid
contract dataset (``recsys data check`` it first): the job trusts its types and ids.
Refused with one line naming the column (exit status 2): text (ISO-8601) timestamps and float
categoricals. CSV tables are typed by Spark's inference, which may differ from polars'; Parquet
is exact.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

SPLIT_METHODS = ("time", "user_time", "leave_last_out")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="contract dataset directory (dataset.toml + tables)")
    p.add_argument("--out", required=True, help="prepared-shard directory to write (absent or empty)")
    p.add_argument("--buckets", type=int, default=16, help="user buckets per split (default 16)")
    p.add_argument("--max-history", type=int, default=20, help="L, the longest history (default 20)")
    p.add_argument("--split", choices=SPLIT_METHODS, default="time")
    p.add_argument("--fractions", default="0.8,0.1,0.1", help="train,valid,test fractions")
    p.add_argument("--tail-days", type=int, default=14, help="days at the log's end that only "
                   "label retention (default 14)")
    p.add_argument("--min-count", type=int, default=1)
    p.add_argument("--no-retention", dest="retention", action="store_false")
    p.add_argument("--no-prior-rate", dest="prior_rate", action="store_false")
    p.add_argument("--no-item-prior-rate", dest="item_prior_rate", action="store_false")
    p.add_argument("--master", default=None, help="Spark master when not set by spark-submit "
                   "(default local[*])")
    args = p.parse_args(argv)
    try:
        args.fractions = tuple(float(f) for f in args.fractions.split(","))
    except ValueError:
        p.error(f"--fractions: not three numbers: {args.fractions!r}")
    if len(args.fractions) != 3 or any(f < 0 for f in args.fractions) or abs(sum(args.fractions) - 1) > 1e-9:
        p.error(f"--fractions must be three non-negative numbers summing to 1, got {args.fractions}")
    for name in ("buckets", "max_history", "min_count"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.tail_days < 0:
        p.error(f"--tail-days must be >= 0, got {args.tail_days}")
    return args


def prepare_settings(args: argparse.Namespace) -> dict:
    """``PrepareConfig.to_dict()`` of these settings, in its key order."""
    return {"max_history": args.max_history, "split": args.split, "fractions": list(args.fractions),
            "retention": args.retention, "min_count": args.min_count, "tail_days": args.tail_days,
            "prior_rate": args.prior_rate, "item_prior_rate": args.item_prior_rate}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # pyspark is imported here, so the arguments can be checked (and tested) without it.
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from pyspark.sql import SparkSession
    from spark_prepare_derive import JobError
    from spark_prepare_pipeline import run

    builder = SparkSession.builder.appName("recsys-prepare-shards")
    if args.master:
        builder = builder.master(args.master)
    spark = builder.config("spark.sql.session.timeZone", "UTC").getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    try:
        out = run(args, prepare_settings(args), spark)
    except JobError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        spark.stop()
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
