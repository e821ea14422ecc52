"""``recsys train`` and ``recsys evaluate``."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from recsys.config_io import preset_names
from recsys.errors import UsageError


def register(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser(
        "train", help="train a model (EM3 or a baseline) end to end",
        description="Train CONFIG (a packaged preset or a TOML file) on a contract dataset. Writes "
        "a run directory (config.toml, checkpoints, history.jsonl, predictions, metrics.json) and "
        "tracks it in MLflow. Runs unchanged under `torchrun --nproc_per_node=N -m recsys train`. "
        f"Presets: {', '.join(preset_names())}.")
    train.add_argument("config", help="preset name or path to a TOML config")
    train.add_argument("--data", help="dataset directory (overrides data.dir)")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value, e.g. --set train.epochs=2 --set "
                       "content.seq_mode='\"frozen\"' (values are TOML; bare words are strings)")
    train.add_argument("--out", type=Path, help="run directory (default runs/<name>-<time>)")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in --out from its last checkpoint; give the "
                       "run's config and --set values again (more epochs, other threads or "
                       "paths are allowed; any other difference is refused)")
    train.add_argument("--tracking-uri", help="MLflow tracking URI (default sqlite:///mlflow.db)")
    train.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.set_defaults(func=run_train)

    ev = sub.add_parser(
        "evaluate", help="evaluate a trained run on a dataset split",
        description="Score SPLIT of --data with the best checkpoint of --run and write an "
        "evaluation run directory with metrics.json (AUC, GAUC, logloss, cold-start slices, "
        "retention proxies) and predictions; tracked in MLflow.")
    ev.add_argument("--run", type=Path, required=True, help="training run directory")
    ev.add_argument("--data", type=Path, required=True, help="dataset directory")
    ev.add_argument("--split", default="test", help="train, valid or test (default test)")
    ev.add_argument("--out", type=Path, help="evaluation directory (default RUN/eval-SPLIT)")
    ev.add_argument("--tracking-uri", help="MLflow tracking URI (default sqlite:///mlflow.db)")
    ev.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    ev.add_argument("--quiet", action="store_true", help="no progress bars")
    ev.set_defaults(func=run_evaluate)


def run_train(args: argparse.Namespace) -> int:
    from recsys.config import load_train_config
    from recsys.training.train import train

    overrides = list(args.overrides)
    if args.data:
        overrides.append(f"data.dir={json.dumps(str(args.data))}")
    if args.no_track:
        overrides.append("tracking.enabled=false")
    if args.tracking_uri:
        overrides.append(f"tracking.uri={json.dumps(args.tracking_uri)}")
    cfg = load_train_config(args.config, overrides)
    if args.out is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Each rank would stamp its own time into the default name and write elsewhere.
        raise UsageError("under torchrun, pass --out RUN_DIR so every rank writes the same run")
    out = args.out or Path("runs") / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    preset = args.config if args.config in preset_names() else None
    metrics = train(cfg, out, resume=args.resume, preset=preset, progress=not args.quiet)
    if metrics is not None:
        print(f"run: {out}")
        print(json.dumps({"labels": metrics["labels"], "retention": metrics["retention"]}, indent=1))
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from recsys.evaluation.evaluate import evaluate

    metrics = evaluate(args.run, args.data, split=args.split, out=args.out,
                       tracking=not args.no_track, tracking_uri=args.tracking_uri,
                       progress=not args.quiet)
    if metrics is not None:
        print(json.dumps(metrics, indent=1))
    return 0
