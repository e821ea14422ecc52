"""Ranking model throughput and memory (docs/design.md §8).

* ID-only DIN + DCNv2 training samples/s: 1 process vs 2 processes (gloo, spawned);
* TorchRec fused tables (FBGEMM TBE, row-wise Adagrad applied in backward) vs plain
  ``nn.EmbeddingBag``/``nn.Embedding`` tables trained with dense Adam (the unsharded model);
* peak memory of training with a 1M- and a 10M-row item table, both ways.

Every case runs in its own process (clean peak RSS, its own thread count). Batches are
random ids (``ranking.testing.toy_data.random_batch``), pre-built, so data loading is not measured.

    python benchmarks/ranking_throughput.py            # full run, writes the results JSON
    python benchmarks/ranking_throughput.py --quick    # small smoke run, prints only
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import (  # noqa: E402
    median_time,
    peak_rss_mb,
    print_table,
    target,
    write_results,
)

DIM, HISTORY, BATCH = 16, 50, 1024


def bench_layout(items: int):
    from data.batch import FeatureLayout

    return FeatureLayout(
        pooled={"user": 100_001, "user_age": 8, "item_brand": 1_001, "ctx_device": 4},
        item_vocab_size=items + 1, max_history=HISTORY, labels=("click", "like"),
        num_items=items + 1)


def build(kind: str, items: int, env=None):
    """``fused``: DMP (world of ``env``) with FBGEMM tables; ``plain``: unsharded model."""
    import torch

    from ranking.config import RankingConfig
    from ranking.model import RankingModel
    from ranking.optim import make_optimizers
    from ranking.sharding import shard_model

    layout = bench_layout(items)
    config = RankingConfig(embedding_dim=DIM, attention_hidden=(64, 32), over_arch=(128, 64),
                           table_sharding={"item": {"sharding_type": "table_wise"}})
    torch.manual_seed(0)
    if kind == "fused":
        model = shard_model(RankingModel(layout, config, device="meta"), config, env,
                            print_plan=False)
        return layout, model, make_optimizers(model, config)
    model = RankingModel(layout, config)
    return layout, model, torch.optim.Adam(model.parameters(), lr=1e-3)


def timed_training(kind: str, items: int, steps: int, repeats: int, seed: int, env=None) -> dict:
    """Median seconds per training step (``repeats`` runs of ``steps`` steps, after warm-up)."""
    import torch

    from ranking.testing.toy_data import random_batch
    from ranking.testing.train import train_step

    layout, model, optimizer = build(kind, items, env)
    g = torch.Generator().manual_seed(seed)
    batches = [random_batch(layout, BATCH, g) for _ in range(4)]

    def run() -> None:
        for i in range(steps):
            train_step(model, optimizer, batches[i % len(batches)])

    seconds = median_time(run, repeats=repeats, warmup=1) / steps
    return {"step_s": seconds, "peak_rss_mb": peak_rss_mb()}


def _two_process_worker(rank: int, port: int, items: int, steps: int, repeats: int,
                        out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE="2", LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2")
    import torch

    from ranking.dist import destroy_process_group, init_process_group_from_env

    torch.set_num_threads(1)
    env = init_process_group_from_env()
    result = timed_training("fused", items, steps, repeats, seed=rank, env=env)
    if rank == 0:
        Path(out).write_text(json.dumps(result))
    destroy_process_group()


def run_case(case: dict) -> dict:
    """Runs one case in this process and returns its measurements."""
    import torch

    if case["procs"] == 2:
        import socket

        import torch.multiprocessing as mp

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        out = tempfile.mktemp(suffix=".json")
        mp.start_processes(_two_process_worker, nprocs=2, start_method="spawn",
                           args=(port, case["items"], case["steps"], case["repeats"], out))
        result = json.loads(Path(out).read_text())
        os.unlink(out)
        return result
    torch.set_num_threads(case["threads"])
    env = None
    if case["kind"] == "fused":
        from ranking.dist import init_process_group_from_env

        env = init_process_group_from_env()
    return timed_training(case["kind"], case["items"], case["steps"], case["repeats"], 0, env)


def in_subprocess(case: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--case", json.dumps(case)],
                          capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"case {case} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table_bytes(kind: str, items: int) -> float:
    """Bytes the item table needs while training: FBGEMM row-wise Adagrad keeps one float
    per row; plain dense Adam keeps weight, gradient and two moments per element."""
    rows = items + 1
    return rows * DIM * 4 + rows * 4 if kind == "fused" else rows * DIM * 4 * 4


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes; do not write results")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))))
        return 0

    items = 10_000 if args.quick else 1_000_000
    steps, repeats = (3, 1) if args.quick else (10, 3)
    load_before = os.getloadavg()
    rows = []
    cores = os.cpu_count() or 1
    # One intra-op thread per process is the fair unit (the 2-process run has one per rank);
    # the all-cores row shows what OpenMP threads cost when the cores are shared.
    for procs, threads, kind in [(1, 1, "fused"), (2, 1, "fused"), (1, 1, "plain"),
                                 (1, cores, "fused")]:
        r = in_subprocess({"kind": kind, "procs": procs, "threads": threads, "items": items,
                           "steps": steps, "repeats": repeats})
        rows.append({"case": "train", "tables": kind, "procs": procs,
                     "threads_per_proc": threads, "item_rows": items,
                     "batch_per_proc": BATCH, "step_s": round(r["step_s"], 4),
                     "samples_per_s": round(procs * BATCH / r["step_s"], 1),
                     "peak_rss_mb": round(r["peak_rss_mb"], 1)})
    for mem_items in ([20_000, 100_000] if args.quick else [1_000_000, 10_000_000]):
        for kind in ("fused", "plain"):
            r = in_subprocess({"kind": kind, "procs": 1, "threads": 1, "items": mem_items,
                               "steps": 2, "repeats": 1})
            rows.append({"case": "memory", "tables": kind, "procs": 1,
                         "threads_per_proc": 1, "item_rows": mem_items,
                         "batch_per_proc": BATCH, "step_s": round(r["step_s"], 4),
                         "samples_per_s": round(BATCH / r["step_s"], 1),
                         "peak_rss_mb": round(r["peak_rss_mb"], 1),
                         "item_table_train_mb": round(table_bytes(kind, mem_items) / 2**20, 1)})
    print_table(rows)
    if args.quick:
        return 0

    def pick(case: str, tables: str, procs: int, threads: int, item_rows: int) -> dict:
        key = (case, tables, procs, threads, item_rows)
        return next(r for r in rows if (r["case"], r["tables"], r["procs"],
                                        r["threads_per_proc"], r["item_rows"]) == key)

    fused1 = pick("train", "fused", 1, 1, items)
    fused1_cores = pick("train", "fused", 1, cores, items)
    fused2 = pick("train", "fused", 2, 1, items)
    plain1 = pick("train", "plain", 1, 1, items)
    big_fused = pick("memory", "fused", 1, 1, 10_000_000)
    big_plain = pick("memory", "plain", 1, 1, 10_000_000)
    targets = [
        target("fused_vs_plain_samples_per_s_ratio_1M", fused1["samples_per_s"]
               / plain1["samples_per_s"], ">=", 1.0),
        target("fused_vs_plain_peak_rss_ratio_10M", big_fused["peak_rss_mb"]
               / big_plain["peak_rss_mb"], "<=", 0.5),
    ]
    load_after = os.getloadavg()
    note = (f"2 processes (1 thread each) vs 1 process (1 thread): "
            f"{fused2['samples_per_s'] / fused1['samples_per_s']:.2f}x; 1 process with "
            f"{cores} threads: {fused1_cores['samples_per_s'] / fused1['samples_per_s']:.2f}x "
            f"the 1-thread process. Every process shares this machine's {cores} cores; "
            f"1-minute load average before/after: {load_before[0]:.1f}/{load_after[0]:.1f} "
            "(other jobs were running), so absolute numbers are noisy; ratios come from the "
            "same run.")
    path = write_results("ranking_throughput", rows, targets,
                         command="python benchmarks/ranking_throughput.py",
                         extra={"config": {"embedding_dim": DIM, "max_history": HISTORY,
                                           "batch_per_process": BATCH, "steps": steps,
                                           "repeats": repeats}, "note": note})
    print(note)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
