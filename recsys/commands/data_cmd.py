"""``recsys data ...``: check a dataset, synthesise the default world, prepare public datasets."""

from __future__ import annotations

import argparse
from pathlib import Path


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
