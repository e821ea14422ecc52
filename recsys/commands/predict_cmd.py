"""``recsys predict``: score a file of requests with a trained model (batch scoring)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

MODEL_HELP = ("a training run directory, an MLflow Model folder, or an MLflow URI such as "
              "models:/em3-ranker@champion or models:/em3-ranker/3")
TRACKING_URI_HELP = ("MLflow tracking and registry URI for a models:/ or runs:/ URI "
                     "(default: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db)")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "predict", help="score a Parquet/CSV file of requests with a trained model",
        description="Score every request row of --input (Parquet or CSV) with --model and write "
        "one probability column per head (pred_<head>), next to the rows' user_id and item_id, "
        "to --out (Parquet or CSV). A request row has user_id, item_id, timestamp and the "
        "dataset's context columns; optionally history (the user's recent item ids), "
        "user_prior / item_prior counts and the user's side features (docs/serving.md). The "
        "input is streamed in chunks with a progress bar; a bad request is one error naming the "
        "column and the row (exit 2) and no output is written (the scores go to a temporary "
        "file that is renamed into place at the end).")
    parser.add_argument("--model", required=True, metavar="URI", help=MODEL_HELP)
    parser.add_argument("--input", required=True, type=Path, metavar="FILE",
                        help="requests (.parquet or .csv)")
    parser.add_argument("--out", required=True, type=Path, metavar="FILE",
                        help="scores (.parquet or .csv)")
    parser.add_argument("--keep", action="append", default=[], metavar="COLUMN",
                        help="also copy this input column to the output (e.g. a request id); "
                        "repeatable")
    parser.add_argument("--chunk-rows", type=int, default=65536, metavar="N",
                        help="requests read and scored at a time (default 65536)")
    parser.add_argument("--data", type=Path, default=None, metavar="DIR",
                        help="for a run directory whose MLflow Model is not written yet: the "
                        "run's dataset, when it moved since training")
    parser.add_argument("--tracking-uri", default=None,
                        help=TRACKING_URI_HELP)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    from recsys.serving.batch import predict_file
    from recsys.serving.resolve import package_of
    from recsys.serving.served import ServedModel

    with package_of(args.model, args.tracking_uri, args.data, progress=not args.quiet) as package:
        served = ServedModel.load(package)
        try:
            summary = predict_file(served, args.input, args.out, args.chunk_rows,
                                   tuple(args.keep), progress=not args.quiet)
        finally:
            served.close()
    print(json.dumps({"out": str(args.out), "rows": summary["rows"],
                      "rows_per_s": round(summary["rows_per_s"], 1)}))
    return 0
