"""One measured step of the scale benchmark, in a process of its own (``benchmarks/scale.py``
runs each through ``scale_checks.measured_run``, so each has its own peak memory).

    python benchmarks/scale_worker.py generate --data DIR --rows N [--seed S]
    python benchmarks/scale_worker.py prepare --data DIR --out PREPARED [--buckets B]
    torchrun --nproc_per_node=W benchmarks/scale_worker.py train --prepared P --steps N --out J
    torchrun --nproc_per_node=W benchmarks/scale_worker.py rows --prepared P --out DIR [--drop-last]
    python benchmarks/scale_worker.py compare --prepared P --out J

``train``: ``id_only`` trained for a fixed number of steps by the Trainer of ``recsys train
--data PREPARED`` (batches streamed by ``data.stream.ShardStream``, cut per rank); each rank
writes ``J.rank<r>.json`` with its samples/s and peak RSS. ``rows``: each rank reads one epoch
of the train split (with ``--drop-last`` through the training run's own loader) and saves the
row ids it was given (``DIR/rank<r>.npy``), so the benchmark can check that the ranks' rows
are disjoint and cover the split. ``compare``: the
streamed reader against the in-memory ``BatchLoader`` on the same shards, alternating, as pure
loader throughput and as training-step throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PRESET = "id_only"
WARMUP_STEPS = 20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _config(data_dir: Path, threads: int):
    """The ``id_only`` run config on ``data_dir`` (a dataset or prepared shards)."""
    from recsys.config import load_train_config

    # The item prior rate stays off: the recorded results (results/scale.json) were measured
    # so, and neither side of any comparison uses it.
    return load_train_config(PRESET, [f"data.dir={json.dumps(str(data_dir))}",
                                      "data.item_prior_rate=false", f"train.threads={threads}",
                                      "tracking.enabled=false"])


def generate(args: argparse.Namespace) -> dict:
    from benchmarks.scale_world import ScaleWorldConfig, existing_world, write_log

    cfg = ScaleWorldConfig(n_rows=args.rows, seed=args.seed)
    reused = existing_world(args.data, cfg)
    if not reused:
        write_log(args.data, cfg)
    return {"reused": reused, "users": cfg.users, "items": cfg.items}


def prepare(args: argparse.Namespace) -> dict:
    from data.prepare_bounded import prepare_to_shards
    from data.shard_manifest import read_manifest

    cfg = _config(args.data, threads=0)
    t0 = time.perf_counter()
    prepare_to_shards(args.data, args.out, cfg.prepare_config(), args.buckets, progress=False)
    manifest = read_manifest(args.out)
    return {"prepare_s": time.perf_counter() - t0,
            "split_rows": {s: manifest.rows(s) for s in manifest.splits}}


def _epoch_loader(cfg, env, drop_last: bool):
    """This rank's train batches: with ``drop_last`` the training run's own loader (which
    drops each rank's last partial batch when there are several ranks), without it the same
    stream keeping that batch, so the epoch's rank cut alone is checked."""
    from data.stream import ShardStream
    from recsys.training.train_data import open_train_data

    data = open_train_data(cfg)
    if drop_last:
        return data.train_loader(cfg, env)
    return ShardStream(data.shards, "train", cfg.train.batch_size, shuffle=True,
                       seed=cfg.train.seed, rank=env.rank, world_size=env.world_size,
                       drop_last=False, block_rows=cfg.data.block_rows,
                       shuffle_buffer_rows=cfg.data.shuffle_buffer_rows)


def _trainer(cfg, run_dir: Path):
    """The training run of ``recsys train --data PREPARED``: its model, optimizer and
    streamed loader (``Trainer.loader``), and its own ``train_step``."""
    from ranking.dist import init_process_group_from_env
    from recsys.training.train import Trainer

    return Trainer(cfg, run_dir, init_process_group_from_env(), progress=False)


def _cycle(loader, epoch: int = 0) -> Iterator:
    """Batches of ``loader`` epoch after epoch, without end."""
    while True:
        loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def train(args: argparse.Namespace) -> dict:
    import tempfile

    cfg = _config(args.prepared, threads=1)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = _trainer(cfg, Path(tmp))
        trainer.model.train()
        batches = _cycle(trainer.loader)
        for _ in range(WARMUP_STEPS):
            trainer.train_step(next(batches))
        samples = 0
        t0 = time.perf_counter()
        for _ in range(args.steps):
            batch = next(batches)
            trainer.train_step(batch)
            samples += batch.size
        wall = time.perf_counter() - t0
        env = trainer.env
    return {"rank": env.rank, "world_size": env.world_size, "steps": args.steps,
            "batch_size": cfg.train.batch_size, "samples": samples, "wall_s": wall,
            "samples_per_s": samples / wall, "peak_rss_mb": _peak_rss_mb()}


def rows(args: argparse.Namespace) -> dict:
    import numpy as np

    from ranking.dist import init_process_group_from_env

    env = init_process_group_from_env()
    cfg = _config(args.prepared, threads=1)
    stream = _epoch_loader(cfg, env, args.drop_last)
    stream.set_epoch(args.epoch)
    ids = [b.row_id.numpy() for b in stream]
    read = np.concatenate(ids) if ids else np.zeros(0, np.int64)
    args.out.mkdir(parents=True, exist_ok=True)
    np.save(args.out / f"rank{env.rank}.npy", read, allow_pickle=False)
    return {"rank": env.rank, "world_size": env.world_size, "rows": int(read.size),
            "batch_size": cfg.train.batch_size,
            "batches": len(ids), "peak_rss_mb": _peak_rss_mb()}


def compare(args: argparse.Namespace) -> dict:
    """Streamed vs in-memory batches of the same shards, timed alternately in one process."""
    import itertools
    import statistics
    import tempfile

    from data.loader import BatchLoader
    from data.shards import load_prepared

    cfg = _config(args.prepared, threads=1)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = _trainer(cfg, Path(tmp))
        trainer.model.train()
        t0 = time.perf_counter()
        memory = BatchLoader(load_prepared(args.prepared), "train", cfg.train.batch_size,
                             shuffle=True, seed=cfg.train.seed)
        load_s = time.perf_counter() - t0
        sources = {"stream": _cycle(trainer.loader), "memory": _cycle(memory)}
        for source in sources.values():  # first batches: file opening, allocator warm-up
            for batch in itertools.islice(source, WARMUP_STEPS):
                trainer.train_step(batch)
        # Per source and kind, (samples, seconds) of each round; short rounds, alternating
        # (and which source goes first), so the machine's drift hits both sources alike.
        runs: dict[str, dict[str, list[tuple[int, float]]]] = {
            k: {"load": [], "train": []} for k in sources}
        for r in range(args.rounds):
            order = list(sources) if r % 2 == 0 else list(sources)[::-1]
            for name in order:
                t0 = time.perf_counter()
                n = sum(b.size for b in itertools.islice(sources[name], args.batches))
                runs[name]["load"].append((n, time.perf_counter() - t0))
            for name in order:
                n, t0 = 0, time.perf_counter()
                for batch in itertools.islice(sources[name], args.batches):
                    trainer.train_step(batch)
                    n += batch.size
                runs[name]["train"].append((n, time.perf_counter() - t0))
    out = {"rounds": args.rounds, "batches_per_round": args.batches,
           "batch_size": cfg.train.batch_size, "memory_loader_build_s": load_s,
           "peak_rss_mb": _peak_rss_mb()}
    for kind in ("load", "train"):
        for name in sources:
            samples = sum(n for n, _ in runs[name][kind])
            out[f"{name}_{kind}_samples_per_s"] = samples / sum(t for _, t in runs[name][kind])
        out[f"stream_over_memory_{kind}"] = (out[f"stream_{kind}_samples_per_s"]
                                             / out[f"memory_{kind}_samples_per_s"])
        out[f"stream_over_memory_{kind}_round_median"] = statistics.median(
            (sn / st) / (mn / mt) for (sn, st), (mn, mt)
            in zip(runs["stream"][kind], runs["memory"][kind], strict=True))
    out["rounds_samples_s"] = runs
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("generate")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--rows", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("prepare")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--buckets", type=int, default=16)
    p = sub.add_parser("train")
    p.add_argument("--prepared", type=Path, required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--out", type=Path, required=True, help="JSON path; rank r writes OUT.rank<r>.json")
    p = sub.add_parser("rows")
    p.add_argument("--prepared", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="directory for rank<r>.npy")
    p.add_argument("--epoch", type=int, default=0)
    p.add_argument("--drop-last", action="store_true", help="drop each rank's last partial batch")
    p = sub.add_parser("compare")
    p.add_argument("--prepared", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="JSON path")
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--batches", type=int, default=10, help="batches per source and round")
    args = parser.parse_args(argv)
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(29700 + os.getpid() % 1000))
    result = {"generate": generate, "prepare": prepare, "train": train, "rows": rows,
              "compare": compare}[args.mode](args)
    if args.mode in ("train",):
        path = args.out.with_name(f"{args.out.name}.rank{result['rank']}.json")
        path.write_text(json.dumps(result) + "\n")
    elif args.mode == "compare":
        args.out.write_text(json.dumps(result) + "\n")
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
