"""``recsys demo``: the main job on the embedded default (the synthetic multimodal world)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "demo", help="run the main job on the synthetic multimodal world",
        description="Synthesise the default world (once; reused when present), validate it and "
        "print its summary.")
    parser.add_argument("--dir", type=Path, default=Path("demo"), help="working directory (default: demo)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the world (default 0)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from data.dataset import load_dataset
    from data.prepare import PrepareConfig, prepare
    from data.summary import format_summary, summarize
    from data.synth import SynthConfig, synthesize

    world = args.dir / "world"
    if not (world / "dataset.toml").is_file():
        synthesize(world, SynthConfig(seed=args.seed), progress=True)
    dataset = load_dataset(world)
    print(format_summary(summarize(dataset, prepare(dataset, PrepareConfig()))))
    return 0
