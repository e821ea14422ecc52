"""Batch scoring speed of ``recsys predict`` (rows/s) and the latency of one request.

    python benchmarks/predict_throughput.py [--rows 50000] [--repeats 3]

A small synthetic world is made and ``id_only`` and ``em3`` (their presets' model sizes, one
epoch: the scores' quality does not matter here) are trained on it once, under
``benchmarks/.data/predict_throughput/``. The requests are the world's logged test rows replayed
as requests with their own history and prior counts (``recsys.serving.replay``), repeated to
``--rows`` rows and written as Parquet. Measured, per model, with the served model already
loaded (what ``recsys predict`` does after loading it):

- ``batch``: ``recsys.serving.batch.predict_file`` over the whole file (read, validate,
  encode, score, write; chunks of 65536 rows, no progress bar), median of ``--repeats`` runs;
- ``single``: one request row per call of the served model (``ServedModel.predict``), as an
  online server sees it, median over 50 calls;

and once, ``cli``: the whole ``python -m recsys predict`` command in a fresh process (start-up
and model loading included). No targets: the issue asks for the figure to be recorded.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import median_time, print_table, write_results  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "benchmarks" / ".data" / "predict_throughput"
PRESETS = ("id_only", "em3")
SETTINGS = ["train.epochs=1", "tracking.enabled=false"]


def prepare_runs() -> tuple[Path, dict[str, Path]]:
    """The world and one trained run per preset (made once, reused afterwards)."""
    from data.synth import SynthConfig, synthesize
    from recsys.config import load_train_config
    from recsys.training.train import train

    world = WORK / "world"
    if not (world / "dataset.toml").is_file():
        synthesize(world, SynthConfig(n_users=600, n_items=500, n_days=40, seed=7))
    runs = {}
    for preset in PRESETS:
        run = WORK / f"run-{preset}"
        if not (run / "metrics.json").is_file():
            cfg = load_train_config(preset, [*SETTINGS, f'data.dir="{world}"'])
            train(cfg, run, preset=preset, progress=False)
        runs[preset] = run
    return world, runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000, help="request rows in the file")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of the batch (median)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()

    import polars as pl

    from recsys.cli import quiet_library_noise
    from recsys.serving.batch import predict_file
    from recsys.serving.mlflow_model import ensure_mlflow_model, package_dir
    from recsys.serving.replay import replay_requests
    from recsys.serving.served import ServedModel

    quiet_library_noise()
    world, runs = prepare_runs()
    # Other work on the machine slows every figure here; the load says how busy it was.
    load_at_start = round(os.getloadavg()[0], 2)
    rows = []
    for preset, run in runs.items():
        logged = replay_requests(run, world, "test").drop("row_id", "click", "like")
        requests = pl.concat([logged] * -(-args.rows // logged.height)).head(args.rows)
        path = WORK / f"requests-{preset}.parquet"
        requests.write_parquet(path)
        out = WORK / f"scores-{preset}.parquet"
        model_dir = ensure_mlflow_model(run)
        served = ServedModel.load(package_dir(model_dir))
        try:
            batch_s = median_time(lambda s=served, p=path, o=out: predict_file(
                s, p, o, progress=False), repeats=args.repeats)
            one = requests.head(1).to_pandas()
            served.predict(one)
            calls = []
            for _ in range(50):
                t0 = time.perf_counter()
                served.predict(one)
                calls.append(time.perf_counter() - t0)
        finally:
            served.close()
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "recsys", "predict", "--model", str(run),
                        "--input", str(path), "--out", str(out), "--quiet"],
                       cwd=REPO, check=True, capture_output=True)
        cli_s = time.perf_counter() - t0
        single_s = statistics.median(calls)
        rows += [
            {"model": preset, "mode": "batch", "rows": args.rows, "seconds": round(batch_s, 3),
             "rows_per_s": round(args.rows / batch_s, 1), "ms_per_request": None},
            {"model": preset, "mode": "single", "rows": 1, "seconds": round(single_s, 5),
             "rows_per_s": round(1 / single_s, 1), "ms_per_request": round(1000 * single_s, 2)},
            {"model": preset, "mode": "cli", "rows": args.rows, "seconds": round(cli_s, 2),
             "rows_per_s": round(args.rows / cli_s, 1), "ms_per_request": None},
        ]
    print_table(rows)
    if not args.no_write:
        command = "python benchmarks/predict_throughput.py" + (
            f" --rows {args.rows}" if args.rows != 50_000 else "")
        path = write_results("predict_throughput", rows, [], command,
                             extra={"world": "SynthConfig(n_users=600, n_items=500, n_days=40, "
                                             "seed=7)", "train": SETTINGS,
                                    "load_average_1m_at_start": load_at_start})
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
