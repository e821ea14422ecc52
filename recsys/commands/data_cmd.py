"""``recsys data ...``: check a dataset, synthesise the default world, prepare public datasets,
write prepared shards."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

ENGINES = ("memory", "bounded")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("data", help="check, synthesise or prepare datasets",
                            description="Dataset tools: validate a contract dataset, write the "
                            "synthetic multimodal world, or convert a public dataset.")
    data_sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    check = data_sub.add_parser(
        "check", help="validate a dataset directory and print its summary",
        description="Validate DIR against the dataset contract (dataset.toml + tables) and print a "
        "summary: rows, users, items, label rates, time span, media coverage and the cold-start "
        "share of the default time split. Every problem is reported as one line naming the file, "
        "column and first offending row; the exit status is then 2.")
    check.add_argument("dir", type=Path, help="dataset directory (holds dataset.toml)")
    check.add_argument("--allow-missing-media", action="store_true",
                       help="treat unreadable or missing image files as items without an image")
    check.set_defaults(func=run_check)

    from data.synth import add_arguments

    synth = data_sub.add_parser(
        "synth", help="write the synthetic multimodal world (the embedded default)",
        description="Write a contract-valid synthetic dataset: items with rendered PNG images and "
        "topic titles, impressions with click/like labels, late-released cold items, and users "
        "whose returns depend on how satisfying their sessions were. Same seed, same bytes. "
        "See docs/synthetic_world.md for the generative story and every knob.")
    add_arguments(synth)
    synth.set_defaults(func=run_synth)

    prep = data_sub.add_parser(
        "prepare", help="convert a public dataset into a contract dataset",
        description="Convert a public dataset layout into a contract dataset directory.")
    prep.add_argument("source", choices=["movielens"], help="which public layout SRC is in")
    prep.add_argument("--src", type=Path, required=True, help="folder with ratings.csv, movies.csv, ...")
    prep.add_argument("--posters", type=Path, default=None, help="folder of <movieId>.jpg posters")
    prep.add_argument("--out", type=Path, required=True, help="output dataset directory")
    prep.add_argument("--like-threshold", type=float, default=4.0, help="rating >= this is a like (default 4.0)")
    prep.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")
    prep.set_defaults(func=run_prepare)

    shard = data_sub.add_parser(
        "shard", help="write a dataset's model-ready rows as prepared shards",
        description="Prepare DATA_DIR (split, histories, labels, vocabularies) with the data.* "
        "settings of --config and write the rows as Parquet shards per split and user bucket, "
        "with a manifest (docs/prepared_shards.md). `recsys train CONFIG --data PREPARED` then "
        "streams the train split from them with bounded memory, each rank reading its own rows. "
        "Refuses an existing non-empty --out; a killed write leaves no half output there.")
    shard.add_argument("dir", type=Path, help="dataset directory (holds dataset.toml)")
    shard.add_argument("--out", type=Path, required=True, help="output shard directory")
    shard.add_argument("--config", default="id_only", help="preset name or TOML config whose "
                       "data.* settings prepare the rows (default id_only: shards hold no item "
                       "media, so content presets train from the dataset directory); train with "
                       "the same settings")
    shard.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value, e.g. --set data.max_history=50")
    shard.add_argument("--buckets", type=int, default=None,
                       help="user buckets (files) per split (default 16)")
    shard.add_argument("--engine", choices=ENGINES, default="memory",
                       help="memory: prepare the whole log in memory, then write (default); "
                       "bounded: prepare in passes over chunks with bounded memory "
                       "(data/prepare_bounded.py), same files")
    shard.set_defaults(func=run_shard)


def run_check(args: argparse.Namespace) -> int:
    from data.dataset import load_dataset
    from data.prepare import PrepareConfig, prepare
    from data.summary import format_summary, summarize

    dataset = load_dataset(args.dir, allow_missing_media=args.allow_missing_media)
    prepared = prepare(dataset, PrepareConfig())
    print(format_summary(summarize(dataset, prepared)))
    return 0


def run_synth(args: argparse.Namespace) -> int:
    from data.synth import config_from_args, synthesize

    out = synthesize(args.out, config_from_args(args), progress=True, overwrite=args.overwrite)
    print(f"wrote the synthetic world to {out}")
    return 0


def run_prepare(args: argparse.Namespace) -> int:
    from data.adapters.movielens import prepare_movielens

    out = prepare_movielens(args.src, args.out, posters=args.posters,
                            like_threshold=args.like_threshold, overwrite=args.overwrite, log=print)
    print(f"wrote {out}; check it with: recsys data check {out}")
    return 0


def run_shard(args: argparse.Namespace) -> int:
    from data.shard_manifest import DEFAULT_BUCKETS, read_manifest
    from recsys.config import load_train_config
    from recsys.errors import UsageError

    buckets = DEFAULT_BUCKETS if args.buckets is None else args.buckets
    if buckets < 1:
        raise UsageError(f"--buckets must be >= 1, got {buckets}")
    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
        raise UsageError(f"--out {args.out} already exists and is not empty; choose another")
    cfg = load_train_config(args.config, args.overrides)  # the --set syntax of recsys train
    config = cfg.prepare_config()
    if args.engine == "bounded":
        from data.prepare_bounded import prepare_to_shards

        prepare_to_shards(args.dir, args.out, config, buckets=buckets,
                          allow_missing_media=cfg.data.allow_missing_media)
    else:
        from data.dataset import load_dataset
        from data.prepare import prepare
        from data.shards import write_shards

        print(f"loading {args.dir}", flush=True)
        dataset = load_dataset(args.dir, allow_missing_media=cfg.data.allow_missing_media)
        print(f"preparing {dataset.interactions.height:,} rows", flush=True)
        write_shards(prepare(dataset, config), args.out, buckets=buckets,
                     progress=lambda line: print(line, flush=True))
    manifest = read_manifest(args.out)
    rows = ", ".join(f"{s} {manifest.rows(s):,}" for s in manifest.splits)
    print(f"wrote prepared shards to {args.out} ({rows} rows, {buckets} buckets); train with: "
          f"recsys train {args.config} --data {args.out}"
          + "".join(f" --set {shlex.quote(o)}" for o in args.overrides if o.startswith("data.")))
    return 0
