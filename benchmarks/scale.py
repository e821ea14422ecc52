"""Beyond one machine's memory: 1M → 100M interactions prepared into shards with bounded memory
and trained streamed from them, in 1 and 2 processes (issue 29, item 5).

For each size: a generated ID-only log (``benchmarks/scale_world.py``, written block by block;
reused when one with the same size and seed is there), prepared into prepared shards by
``data.prepare_bounded.prepare_to_shards`` in a process of its own (wall time, rows/s, peak
RSS), then ``id_only`` trained for a fixed number of steps on batches streamed from the shards
(``data.stream.ShardStream``) in 1 process and in 2 (``torchrun``, gloo on CPU, one thread
each), recording samples/s and each process's peak RSS. On the 1M-row log
(``--coverage-rows``), 2 processes each read one epoch of the train split and the benchmark
checks that their rows are disjoint and cover it. On the 10M-row log (``--compare-rows``),
the streamed reader and the in-memory ``BatchLoader`` feed the same model alternately in one
process: loader throughput and training samples/s. Every step runs in a process of its own
(``scale_checks.measured_run``), so each peak is that step's alone.

Data lives under ``benchmarks/.data/scale/`` (docs/prepared_shards.md, "Scale", gives the
disk a size takes); the prepared shards of a size are deleted after it unless ``--keep``.
Sizes not run keep their rows from the previous ``results/scale.json`` (each row names the
command that measured it), so a long size can be recorded in a run of its own.

    python benchmarks/scale.py --sizes 1M 10M          # writes results/scale.json + scale_growth.png
    python benchmarks/scale.py --sizes 100M --steps 300
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks.common import RESULTS_DIR, machine, print_table, target, write_results  # noqa: E402
from benchmarks.scale_checks import growth_plot, measured_run, rank_coverage  # noqa: E402

DATA = ROOT / "benchmarks" / ".data" / "scale"
WORKER = str(ROOT / "benchmarks" / "scale_worker.py")
RESULT_NAME = "scale"
PREP_RSS_MB = 8 * 1024  # issue 29's targets
TRAIN_RSS_MB = 4 * 1024
STREAM_VS_MEMORY = 0.9


def parse_rows(text: str) -> int:
    """``1M`` / ``250k`` / ``1000000`` → rows."""
    scale = {"k": 10**3, "m": 10**6, "g": 10**9}.get(text[-1].lower(), 1)
    try:
        return int(float(text[:-1] if scale > 1 else text) * scale)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a row count: {text!r} (e.g. 1M, 250k)") from None


def rows_label(n: int) -> str:
    return f"{n // 10**6}M" if n % 10**6 == 0 else f"{n // 10**3}k" if n % 10**3 == 0 else str(n)


def _dir_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def _torchrun(nproc: int, *worker_args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={nproc}", WORKER, *worker_args]


def _train(prepared: Path, nproc: int, steps: int, log: Path) -> dict[str, Any]:
    """``steps`` streamed training steps in ``nproc`` processes → global samples/s and the
    largest per-process peak RSS."""
    with tempfile.TemporaryDirectory(dir=DATA) as tmp:
        out = Path(tmp) / "train"
        run = measured_run(_torchrun(nproc, "train", "--prepared", str(prepared),
                                     "--steps", str(steps), "--out", str(out)), log=log)
        ranks = [json.loads(out.with_name(f"train.rank{r}.json").read_text()) for r in range(nproc)]
    return {"samples_per_s": sum(r["samples"] for r in ranks) / max(r["wall_s"] for r in ranks),
            "peak_rss_mb": max(max(r["peak_rss_mb"] for r in ranks), 0.0),
            "tree_peak_rss_mb": run["peak_rss_mb"], "ranks": ranks}


def _coverage(prepared: Path, log: Path) -> dict[str, Any]:
    """2 processes each read one epoch of the train split; are their rows a disjoint cover?
    Epoch 0 checks the rank cut alone; epoch 1 reads as training does (each rank's last
    partial batch dropped)."""
    import polars as pl

    from data.shard_manifest import read_manifest

    manifest = read_manifest(prepared)
    split_rows = pl.concat([pl.read_parquet(f.path, columns=["row_id"])
                            for f in manifest.splits["train"]])["row_id"].to_numpy()
    out: dict[str, Any] = {}
    for epoch, drop_last in ((0, False), (1, True)):
        with tempfile.TemporaryDirectory(dir=DATA) as tmp:
            run = measured_run(_torchrun(2, "rows", "--prepared", str(prepared), "--out", tmp,
                                         "--epoch", str(epoch),
                                         *(["--drop-last"] if drop_last else [])), log=log)
            batch_size = json.loads(run["stdout"].splitlines()[-1])["batch_size"]
            per_rank = [np.load(Path(tmp) / f"rank{r}.npy", allow_pickle=False) for r in range(2)]
        out[f"epoch{epoch}"] = {"drop_last": drop_last, **rank_coverage(
            per_rank, split_rows, batch_size if drop_last else None)}
    out["ok"] = all(v["ok"] for v in out.values())
    return out


def _compare(prepared: Path, rounds: int, batches: int, log: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(dir=DATA) as tmp:
        out = Path(tmp) / "compare.json"
        run = measured_run([sys.executable, WORKER, "compare", "--prepared", str(prepared),
                            "--out", str(out), "--rounds", str(rounds), "--batches", str(batches)],
                           log=log)
        result = json.loads(out.read_text())
    result["tree_peak_rss_mb"] = run["peak_rss_mb"]
    return result


def run_size(n: int, args: argparse.Namespace, log: Path) -> tuple[dict, dict | None, dict | None]:
    """Generate, prepare, train 1 and 2 processes (and the coverage / comparison where due)."""
    world = DATA / f"world-{n}-seed{args.seed}"
    prepared = DATA / f"prepared-{n}-seed{args.seed}"
    print(f"[{rows_label(n)}] generating {world}", flush=True)
    gen = measured_run([sys.executable, WORKER, "generate", "--data", str(world), "--rows", str(n),
                        "--seed", str(args.seed)], log=log)
    gen_out = json.loads(gen["stdout"].splitlines()[-1])
    prep_record = prepared.with_name(prepared.name + ".prep.json")
    if args.reuse_prepared and prep_record.is_file() and (prepared / "manifest.json").is_file():
        print(f"[{rows_label(n)}] reusing {prepared} and its measured preparation", flush=True)
        prep = json.loads(prep_record.read_text())
        prep_reused = True
    else:
        shutil.rmtree(prepared, ignore_errors=True)
        prep_record.unlink(missing_ok=True)
        print(f"[{rows_label(n)}] preparing with bounded memory → {prepared}", flush=True)
        load = os.getloadavg()[0]
        prep = measured_run([sys.executable, WORKER, "prepare", "--data", str(world), "--out",
                             str(prepared), "--buckets", str(args.buckets)], log=log)
        prep |= {"buckets": args.buckets, "load_avg_1m": round(load, 2),
                 "date": _dt.date.today().isoformat()}
        prep_reused = False
        # Kept with the shards, so a run that stops later can reuse both (--reuse-prepared).
        prep_record.write_text(json.dumps(prep) + "\n")
    if prep.get("buckets") != args.buckets:
        raise SystemExit(f"error: {prepared} has {prep.get('buckets')} buckets, not --buckets "
                         f"{args.buckets}; run without --reuse-prepared")
    prep_out = json.loads(prep["stdout"].splitlines()[-1])
    row: dict[str, Any] = {
        "rows": n, "size": rows_label(n), "users": gen_out["users"], "items": gen_out["items"],
        "generate_s": None if gen_out["reused"] else round(gen["wall_s"], 1),
        "log_mb": round(_dir_mb(world), 1),
        "prep_s": round(prep["wall_s"], 1), "prep_rows_per_s": round(n / prep["wall_s"]),
        "prep_peak_rss_mb": round(prep["peak_rss_mb"]), "shard_mb": round(_dir_mb(prepared), 1),
        "split_rows": prep_out["split_rows"], "prep_load_avg_1m": prep.get("load_avg_1m"),
        # A preparation measured by an earlier run whose shards this one trained on.
        "prep_reused": prep_reused, "date": _dt.date.today().isoformat(),
    }
    for nproc in (1, 2):
        print(f"[{rows_label(n)}] training {args.steps} steps streamed, {nproc} process(es)", flush=True)
        row[f"train{nproc}_load_avg_1m"] = round(os.getloadavg()[0], 2)
        t = _train(prepared, nproc, args.steps, log)
        row[f"train{nproc}_samples_per_s"] = round(t["samples_per_s"], 1)
        row[f"train{nproc}_peak_rss_mb"] = round(t["peak_rss_mb"])
    coverage = None
    if n == args.coverage_rows:
        print(f"[{rows_label(n)}] 2-process epoch coverage", flush=True)
        coverage = {"rows": n, "date": _dt.date.today().isoformat(), **_coverage(prepared, log)}
    compare = None
    if n == args.compare_rows:
        print(f"[{rows_label(n)}] streamed vs in-memory loader", flush=True)
        compare = {"rows": n, **_compare(prepared, args.rounds, args.batches, log)}
    if not args.keep:
        shutil.rmtree(prepared, ignore_errors=True)
        prep_record.unlink(missing_ok=True)
    return row, coverage, compare


def _previous() -> dict[str, Any]:
    path = RESULTS_DIR / f"{RESULT_NAME}.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _plot(rows: list[dict]) -> None:
    growth_plot(rows, RESULTS_DIR / "scale_growth.png",
                [(PREP_RSS_MB, "preparation target"), (TRAIN_RSS_MB, "training target")])


def build_targets(rows: list[dict], coverage: dict | None, compare: dict | None) -> list[dict]:
    targets = []
    for r in rows:
        targets.append(target(f"{r['size']}: preparation peak RSS (MiB)", r["prep_peak_rss_mb"],
                              "<=", PREP_RSS_MB))
        peak = max(r["train1_peak_rss_mb"], r["train2_peak_rss_mb"])
        targets.append(target(f"{r['size']}: training peak RSS per process (MiB)", peak, "<=",
                              TRAIN_RSS_MB))
    if compare is not None:
        targets.append(target(f"{rows_label(compare['rows'])}: streamed / in-memory training "
                              "samples/s (interleaved rounds)",
                              compare["stream_over_memory_train"], ">=", STREAM_VS_MEMORY))
    if coverage is not None:
        targets.append(target("2 processes read disjoint rows covering the epoch (1 = yes)",
                              float(coverage["ok"]), ">=", 1.0))
    return targets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", type=parse_rows, default=[10**6, 10**7, 10**8],
                        help="log sizes (default 1M 10M 100M)")
    parser.add_argument("--steps", type=int, default=300, help="timed training steps per run")
    parser.add_argument("--keep", action="store_true", help="keep the prepared shards")
    parser.add_argument("--reuse-prepared", action="store_true",
                        help="train on shards a previous run kept (--keep, or a run that stopped "
                        "after preparing) and report that run's measured preparation")
    parser.add_argument("--buckets", type=int, default=64,
                        help="user buckets per split (default 64: in preparation, one output "
                        "bucket of a 100M log is about 1.2M rows)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compare-rows", type=parse_rows, default=10**7,
                        help="the size on which streamed and in-memory loading are compared")
    parser.add_argument("--coverage-rows", type=parse_rows, default=10**6,
                        help="the size on which 2 processes' epoch rows are checked")
    parser.add_argument("--rounds", type=int, default=30, help="alternating comparison rounds")
    parser.add_argument("--batches", type=int, default=10, help="batches per source and round")
    parser.add_argument("--replot", action="store_true",
                        help="only redraw scale_growth.png from results/scale.json")
    args = parser.parse_args(argv)
    if args.replot:
        _plot(_previous()["rows"])
        return 0
    DATA.mkdir(parents=True, exist_ok=True)
    log = DATA / "scale.log"
    command = "python benchmarks/scale.py " + " ".join(argv if argv is not None else sys.argv[1:])
    rows: list[dict] = []
    coverage = compare = None
    for n in sorted(args.sizes):
        row, cov, cmp = run_size(n, args, log)
        row["command"] = command  # rows of one file may come from different runs
        rows.append(row)
        coverage, compare = cov or coverage, cmp or compare
        # Written after every size, so a long run leaves what finished; the file is read
        # again each time, so two runs of different sizes keep each other's rows.
        previous = _previous()
        done = {r["rows"] for r in rows}  # a size still to run keeps its old row meanwhile
        kept = [r for r in previous.get("rows", []) if r["rows"] not in done]
        coverage = coverage or previous.get("coverage")
        compare = compare or previous.get("compare")
        all_rows = sorted([*kept, *rows], key=lambda r: r["rows"])
        write_results(RESULT_NAME, all_rows, build_targets(all_rows, coverage, compare),
                      command=command,
                      extra={"coverage": coverage, "compare": compare,
                             "settings": {"preset": "id_only", "steps": args.steps,
                                          "buckets": args.buckets, "seed": args.seed,
                                          "threads_per_process": 1}})
        _plot(all_rows)
    print(f"machine: {machine()}")
    print_table(all_rows, ["size", "users", "items", "prep_s", "prep_rows_per_s",
                           "prep_peak_rss_mb", "shard_mb", "train1_samples_per_s",
                           "train1_peak_rss_mb", "train2_samples_per_s", "train2_peak_rss_mb"])
    if compare:
        print(f"streamed vs in-memory ({rows_label(compare['rows'])}): loader "
              f"{compare['stream_load_samples_per_s']:.0f} vs {compare['memory_load_samples_per_s']:.0f}"
              f" samples/s, training {compare['stream_train_samples_per_s']:.0f} vs "
              f"{compare['memory_train_samples_per_s']:.0f} samples/s")
    if coverage:
        print(f"2-process coverage ({rows_label(coverage['rows'])}): "
              + ", ".join(f"{k}: {v}" for k, v in coverage.items() if k.startswith("epoch")))
    for t in build_targets(all_rows, coverage, compare):
        print(f"{'met' if t['met'] else 'MISSED'}: {t['name']} = {t['value']} (target {t['target']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
