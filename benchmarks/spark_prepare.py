"""Prepared shards from Spark equal the polars ones, and train to identical metrics (issue 29).

Per dataset (a small synthetic world; MovieLens when ``shared/data/movielens-small`` is
present, with its genre and tag bags):

1. ``.venv-spark`` is made once (``benchmarks/spark_env.py``: pinned pyspark, Java 17 checked);
2. the Spark job (``benchmarks/spark_prepare_job.py``) runs with ``spark-submit`` in local mode
   and writes its shards; ``data.shards.write_shards(prepare(load_dataset(dir), cfg))`` writes
   the polars shards with the same settings (the presets' ``[data]`` defaults), both timed;
3. ``compare_shards`` reads every file of both with polars: the same files, and per file the
   same column names, order and dtypes and the same values in every row (floats bit for bit,
   nulls where nulls); the manifests equal except ``written_by``;
4. ``recsys train id_only --data PREPARED`` trains from each shard directory in a subprocess
   with the same seed and one torch thread (with two, CPU reductions may add in another order
   and two runs on the same shards differ in the last digits); the test metrics and the test
   predictions must be identical.

    python benchmarks/spark_prepare.py                  # synth + MovieLens if present
    python benchmarks/spark_prepare.py --dataset synth --epochs 1 --output /tmp/spark.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import print_table, write_results  # noqa: E402
from benchmarks.spark_env import PYSPARK_VERSION, SPARK_VENV, ensure_spark_env, java_major  # noqa: E402

JOB = Path(__file__).resolve().parent / "spark_prepare_job.py"
DERIVE = Path(__file__).resolve().parent / "spark_prepare_derive.py"
LAYOUT = Path(__file__).resolve().parent / "spark_prepare_layout.py"
PIPELINE = Path(__file__).resolve().parent / "spark_prepare_pipeline.py"
MOVIELENS_SRC = ROOT.parent / "shared" / "data" / "movielens-small"
PRESET = "id_only"
# A few hundred users: big enough for every derived column to vary (cold users and items,
# censored retention, long histories, empty buckets at 16), small enough for a local Spark.
SYNTH = {"n_users": 400, "n_items": 300, "n_days": 40}


# ---- comparison -----------------------------------------------------------------------------
def _parquet_files(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*.parquet"))


def compare_frames(expected: pl.DataFrame, actual: pl.DataFrame, name: str) -> list[str]:
    """Differences between two frames: column names and order, dtypes, row count, then for
    each column the first row whose value differs (nulls equal nulls; floats compared bit for
    bit, so -0.0 and 0.0 differ and NaN equals NaN)."""
    if expected.columns != actual.columns:
        return [f"{name}: columns {actual.columns} instead of {expected.columns}"]
    problems = [f"{name}: column {c} is {actual.schema[c]} instead of {expected.schema[c]}"
                for c in expected.columns if expected.schema[c] != actual.schema[c]]
    if problems:
        return problems
    if expected.height != actual.height:
        return [f"{name}: {actual.height} rows instead of {expected.height}"]
    for c in expected.columns:
        a, b = _comparable(expected[c]), _comparable(actual[c])
        same = (a == b) | (a.is_null() & b.is_null()) if not isinstance(a.dtype, pl.List) else \
            pl.Series([x == y for x, y in zip(a.to_list(), b.to_list(), strict=True)])
        same = same.fill_null(False)
        if not same.all():
            row = int((~same).arg_max())
            problems.append(f"{name}: column {c} differs in {int((~same).sum())} rows, first row "
                            f"{row}: {actual[c][row]!r} instead of {expected[c][row]!r}")
    return problems


def _comparable(s: pl.Series) -> pl.Series:
    """Floats as their bit patterns (nulls kept), so equality is exact and NaN equals NaN."""
    bits = {pl.Float32: "int32", pl.Float64: "int64"}.get(s.dtype)
    if bits is None:
        return s
    pattern = pl.Series(s.name, s.fill_null(0.0).to_numpy().view(bits))
    return pl.select(pl.when(s.is_null()).then(None).otherwise(pattern).alias(s.name)).to_series()


def compare_shards(expected: Path, actual: Path) -> list[str]:
    """Every difference between two prepared-shard directories, [] when they hold the same
    files with the same columns, dtypes and rows, and the same manifest but for
    ``written_by``."""
    expected, actual = Path(expected), Path(actual)
    files_e, files_a = _parquet_files(expected), _parquet_files(actual)
    if files_e != files_a:
        return [f"files {sorted(set(files_a) ^ set(files_e))} are in only one of the two directories"]
    problems = []
    for name in files_e:
        problems += compare_frames(pl.read_parquet(expected / name), pl.read_parquet(actual / name), name)
    manifest_e = json.loads((expected / "manifest.json").read_text(encoding="utf-8"))
    manifest_a = json.loads((actual / "manifest.json").read_text(encoding="utf-8"))
    for key in sorted(manifest_e.keys() | manifest_a.keys()):
        if key != "written_by" and manifest_e.get(key) != manifest_a.get(key):
            problems.append(f"manifest.json: {key} differs")
    return problems


# ---- the two writers ------------------------------------------------------------------------
def make_dataset(name: str, workdir: Path) -> Path | None:
    """Writes dataset ``name`` under ``workdir``; None (with a line) when its source is absent."""
    out = workdir / name
    if name == "synth":
        from data.synth import SynthConfig, synthesize

        synthesize(out, SynthConfig(**SYNTH), overwrite=True)
        return out
    if not (MOVIELENS_SRC / "ratings.csv").is_file():
        print(f"skipping movielens: {MOVIELENS_SRC} not found", flush=True)
        return None
    from data.adapters.movielens import prepare_movielens

    return prepare_movielens(MOVIELENS_SRC, out, posters=None, overwrite=True, log=None)


def spark_command(data: Path, out: Path, buckets: int, threads: int, settings: tuple[str, ...] = (),
                  venv: Path = SPARK_VENV) -> list[str]:
    """The spark-submit command line of the job in local mode with ``threads`` cores;
    ``settings``: more job arguments (``--split user_time``, ...)."""
    return [str(venv / "bin" / "spark-submit"), "--master", f"local[{threads}]",
            "--driver-memory", "3g", "--conf", "spark.ui.enabled=false",
            "--conf", f"spark.sql.shuffle.partitions={2 * threads}",
            "--py-files", f"{PIPELINE},{DERIVE},{LAYOUT}",
            str(JOB), "--data", str(data), "--out", str(out), "--buckets", str(buckets), *settings]


def spark_env_vars(venv: Path = SPARK_VENV) -> dict[str, str]:
    """spark-submit finds pyspark through the ``python`` on PATH: the venv's goes first."""
    return {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYSPARK_PYTHON": str(venv / "bin" / "python")}


def run_spark_job(data: Path, out: Path, buckets: int, threads: int, log: Path,
                  settings: tuple[str, ...] = ()) -> float:
    """Runs the job; returns its wall seconds (JVM start-up included). Its output goes to
    ``log``; a failure raises with the log's last lines."""
    started = time.perf_counter()
    with log.open("w") as fh:
        done = subprocess.run(spark_command(data, out, buckets, threads, settings), stdout=fh,
                              stderr=subprocess.STDOUT, env=spark_env_vars())
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise RuntimeError(f"the Spark job failed (exit {done.returncode}), {log}:\n{tail}")
    return seconds


def prepare_settings():
    """The PrepareConfig of the preset (what the Spark job's defaults reproduce)."""
    from recsys.config import load_train_config

    return load_train_config(PRESET, ["tracking.enabled=false"]).prepare_config()


def write_polars_shards(data: Path, out: Path, buckets: int) -> float:
    """``write_shards(prepare(load_dataset(data)))`` with the preset's settings; wall seconds."""
    from data.dataset import load_dataset
    from data.prepare import prepare
    from data.shards import write_shards

    started = time.perf_counter()
    write_shards(prepare(load_dataset(data), prepare_settings()), out, buckets)
    return time.perf_counter() - started


# ---- training from both ---------------------------------------------------------------------
COMPARED_METRICS = ("split", "rows", "users", "labels", "retention", "best_epoch")


def train_from(shards: Path, run_dir: Path, seed: int, epochs: int, threads: int) -> dict[str, Any]:
    """``recsys train id_only --data shards`` in a subprocess; returns its test metrics."""
    shutil.rmtree(run_dir, ignore_errors=True)
    command = [sys.executable, "-m", "recsys", "train", PRESET, "--data", str(shards),
               "--out", str(run_dir), "--no-track", "--quiet",
               "--set", f"train.seed={seed}", "--set", f"train.epochs={epochs}",
               "--set", f"train.threads={threads}"]
    log = run_dir.with_name(run_dir.name + ".log")
    with log.open("w") as fh:
        done = subprocess.run(command, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise RuntimeError(f"training from {shards} failed (exit {done.returncode}), {log}:\n{tail}")
    return json.loads((run_dir / "metrics.json").read_text())


def metrics_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The test metrics (all but throughput) that are not identical."""
    return [k for k in COMPARED_METRICS if a.get(k) != b.get(k)]


# ---- the benchmark --------------------------------------------------------------------------
def bench_dataset(name: str, work: Path, buckets: int, seed: int, epochs: int, threads: int,
                  train_threads: int = 1) -> dict[str, Any] | None:
    data = make_dataset(name, work)
    if data is None:
        return None
    polars_dir, spark_dir = work / f"{name}-polars", work / f"{name}-spark"
    for d in (polars_dir, spark_dir):
        shutil.rmtree(d, ignore_errors=True)
    print(f"{name}: Spark job ...", flush=True)
    spark_s = run_spark_job(data, spark_dir, buckets, threads, work / f"{name}-spark.log")
    print(f"{name}: polars write_shards ...", flush=True)
    polars_s = write_polars_shards(data, polars_dir, buckets)
    problems = compare_shards(polars_dir, spark_dir)
    for p in problems[:20]:
        print(f"  {name}: {p}", flush=True)
    print(f"{name}: training {PRESET} from each ...", flush=True)
    m_polars = train_from(polars_dir, work / f"{name}-run-polars", seed, epochs, train_threads)
    m_spark = train_from(spark_dir, work / f"{name}-run-spark", seed, epochs, train_threads)
    differ = metrics_differences(m_polars, m_spark)
    preds = compare_frames(pl.read_parquet(work / f"{name}-run-polars" / "predictions" / "test.parquet"),
                           pl.read_parquet(work / f"{name}-run-spark" / "predictions" / "test.parquet"),
                           "predictions/test.parquet")
    manifest = json.loads((polars_dir / "manifest.json").read_text())
    label = manifest["dataset"]["primary_label"]
    return {
        "dataset": name, "rows": sum(s["rows"] for s in manifest["splits"].values()),
        "files": len(_parquet_files(polars_dir)), "spark_s": round(spark_s, 1),
        "polars_s": round(polars_s, 2), "spark_over_polars": round(spark_s / polars_s, 1),
        "shards_equal": not problems, "differences": problems[:20],
        "metrics_identical": not differ and not preds, "metrics_differing": differ + preds[:5],
        "test_auc": m_polars["labels"][label]["auc"], "test_gauc": m_polars["labels"][label]["gauc"],
        "test_auc_spark": m_spark["labels"][label]["auc"],
        "test_gauc_spark": m_spark["labels"][label]["gauc"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=("synth", "movielens", "all"), default="all")
    parser.add_argument("--buckets", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="Spark's local cores (default 2)")
    parser.add_argument("--train-threads", type=int, default=1, help="torch threads of each "
                        "training run (default 1: reproducible to the last digit)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the datasets, shards and "
                        "runs here (default: a temporary directory)")
    parser.add_argument("--output", type=Path, default=None, help="write the JSON here instead of "
                        "benchmarks/results/spark_prepare.json")
    args = parser.parse_args(argv)
    python = ensure_spark_env()
    load_before = round(os.getloadavg()[0], 1)
    names = ("synth", "movielens") if args.dataset == "all" else (args.dataset,)
    with tempfile.TemporaryDirectory(prefix="spark-prepare-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        rows = [r for r in (bench_dataset(n, work, args.buckets, args.seed, args.epochs, args.threads,
                                          args.train_threads) for n in names) if r is not None]
    columns = ["dataset", "rows", "files", "spark_s", "polars_s", "spark_over_polars",
               "shards_equal", "metrics_identical", "test_auc", "test_auc_spark"]
    print_table(rows, columns)
    targets = [{"name": f"{r['dataset']}: {what}", "value": r[what], "target": "true",
                "met": bool(r[what])} for r in rows for what in ("shards_equal", "metrics_identical")]
    # Other jobs share the machine: its load says how far the wall times are from a quiet run.
    load = {"before": load_before, "after": round(os.getloadavg()[0], 1)}
    extra = {"load_average_1m": load, "pyspark": PYSPARK_VERSION, "java": java_major(), "spark_python": str(python),
             "spark_master": f"local[{args.threads}]", "buckets": args.buckets, "seed": args.seed,
             "epochs": args.epochs, "train_threads": args.train_threads, "preset": PRESET, "synth": SYNTH,
             "note": "spark_s is the whole spark-submit (JVM start-up and local-mode scheduling "
                     "included); polars_s is load_dataset + prepare + write_shards in one process"}
    command = "python benchmarks/spark_prepare.py" + ("" if args.dataset == "all" else f" --dataset {args.dataset}")
    if args.output:
        args.output.write_text(json.dumps({"benchmark": "spark_prepare", "rows": rows,
                                           "targets": targets, **extra}, indent=2) + "\n")
        print(f"wrote {args.output}")
    else:
        print(f"wrote {write_results('spark_prepare', rows, targets, command, extra)}")
    if not all(t["met"] for t in targets):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
