"""``recsys track sync RUN_DIR...``: upload run directories that were not tracked yet."""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "track", help="MLflow tracking of run directories",
        description="Mirror run directories into MLflow. Training and evaluation write "
        "everything to their run directory first and track it when they finish; when the "
        "tracking store was unreachable or read-only the run stays marked as not synced "
        "(run.json: tracking.synced = false) and is uploaded with 'recsys track sync'.")
    track_sub = parser.add_subparsers(dest="track_command", metavar="ACTION", required=True)
    sync = track_sub.add_parser(
        "sync", help="upload not-yet-synced run directories to MLflow",
        description="Log each RUN_DIR to MLflow: params (flattened config), per-epoch and final "
        "metrics, tags (dataset fingerprint, git commit, preset), artifacts (config, metrics, "
        "predictions, plots) and the checkpoints as a new version of the registered model. A "
        "directory that is not itself a run is searched for runs that are not synced yet. "
        "Idempotent: a run already synced to the same tracking URI is skipped. Prints one JSON "
        "object per run; exit status 1 when any upload failed.")
    sync.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR",
                      help="run directory (holds run.json), or a folder of run directories")
    sync.add_argument("--tracking-uri", default=None,
                      help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else "
                      "sqlite:///<cwd>/mlflow.db)")
    sync.add_argument("--model-name", default=None,
                      help="registered model for the checkpoints (default: run.json model_name)")
    sync.add_argument("--experiment", default=None,
                      help="MLflow experiment (default: the model name, else 'recsys')")
    sync.add_argument("--allow-unfinished", action="store_true",
                      help="also upload runs whose status is still 'running' (e.g. crashed "
                      "trainings); they are marked KILLED in MLflow")
    sync.set_defaults(func=run_sync)


def _expand(paths: list[Path]) -> list[Path]:
    from recsys.errors import UsageError
    from recsys.runs.rundir import META_FILE
    from recsys.runs.tracking import pending_runs

    runs, problems = [], []
    for path in paths:
        if (path / META_FILE).is_file():
            runs.append(path)
        elif path.is_dir():
            found = pending_runs(path)
            if not found:
                problems.append(f"{path}: no run directory that needs syncing under it")
            runs += found
        else:
            problems.append(f"{path}: not a run directory (no {META_FILE})")
    if problems:
        raise UsageError(problems)
    return runs


def run_sync(args: argparse.Namespace) -> int:
    from recsys.errors import UsageError
    from recsys.runs.rundir import read_meta
    from recsys.runs.tracking import TrackingWarning, track_run

    runs = _expand(args.run_dirs)
    unfinished = [str(r) for r in runs if read_meta(r).get("status") == "running"]
    if unfinished and not args.allow_unfinished:
        raise UsageError([f"{r}: run is still 'running' (pass --allow-unfinished to upload it "
                          "anyway)" for r in unfinished])
    failed = 0
    for run_dir in runs:
        with warnings.catch_warnings():
            # the failure is reported in the JSON line below; the warning would repeat it
            warnings.simplefilter("ignore", TrackingWarning)
            result = track_run(run_dir, args.tracking_uri, args.model_name, args.experiment)
        failed += not result.synced
        print(json.dumps({"run_dir": str(run_dir), **result.to_dict()}))
    return 1 if failed else 0
