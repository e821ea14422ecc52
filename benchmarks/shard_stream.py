"""Streaming from prepared shards against the in-memory loader: does ShardStream keep up?

On the synthetic world (``--users`` users over ``--days`` days), written as prepared shards
(16 buckets), two measurements, each alternated round by round so a slow minute of a shared
machine hits every case alike:

* ``loader``: samples/s of iterating one shuffled epoch of the train split, building every
  ``Batch``, with no model: ``BatchLoader`` on the split in memory (its one-off array build
  excluded), ``ShardStream`` streaming (blocks and buffer well below the split: several chunks
  per epoch, each decoded in the background thread), and ``ShardStream`` with the defaults
  (the split fits one buffer: decoded once, kept). Without a model the streamed loader is
  bound by decoding every epoch, which the in-memory loader did once: this ratio says how
  much headroom decoding leaves, not what training sees.
* ``train``: samples/s of the ``id_only`` Trainer's ``run_epoch`` (``train.max_steps_per_epoch``
  steps, one intra-op thread), its data from the dataset directory (``BatchLoader``) against
  from the shards, streamed with the same small blocks and buffer.

The target is the training rate: streamed / in-memory >= 0.9.

    python benchmarks/shard_stream.py             # writes results/shard_stream.json
    python benchmarks/shard_stream.py --quick     # small world, one round, no results file
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import peak_rss_mb, print_table, target, write_results  # noqa: E402
from data.dataset import load_dataset  # noqa: E402
from data.loader import BatchLoader  # noqa: E402
from data.prepare import prepare  # noqa: E402
from data.shards import load_prepared, write_shards  # noqa: E402
from data.stream import ShardStream  # noqa: E402
from data.synth import SynthConfig, synthesize  # noqa: E402

# Blocks and buffer well below the split, so an epoch crosses several chunks.
STREAMED = {"block_rows": 16_384, "shuffle_buffer_rows": 65_536}
TRAIN_SETTINGS = ["train.batch_size=2048", "train.threads=1", "tracking.enabled=false",
                  "train.compile=off", "data.max_history=20"]


def epoch_rate(loader, epoch: int) -> float:
    loader.set_epoch(epoch)
    start, n = time.perf_counter(), 0
    for batch in loader:
        n += batch.size
    return n / (time.perf_counter() - start)


def loader_rounds(shards: Path, rounds: int, batch_size: int) -> dict[str, list[float]]:
    memory = BatchLoader(load_prepared(shards, ("train",)), "train", batch_size, shuffle=True)
    cases = {"BatchLoader (in memory)": memory,
             "ShardStream streamed": ShardStream(shards, "train", batch_size, shuffle=True, **STREAMED),
             "ShardStream one buffer (defaults)": ShardStream(shards, "train", batch_size, shuffle=True)}
    rates: dict[str, list[float]] = {name: [] for name in cases}
    for r in range(rounds + 1):  # round 0 warms up (first reads, the kept split's decode)
        names = list(cases) if r % 2 == 0 else list(reversed(cases))
        for name in names:
            rate = epoch_rate(cases[name], r)
            if r:
                rates[name].append(rate)
    return rates


def train_rounds(world: Path, shards: Path, rounds: int, steps: int) -> dict[str, list[float]]:
    from ranking.dist import process_group
    from recsys.config import load_train_config
    from recsys.training.train import Trainer

    sets = [*TRAIN_SETTINGS, f"train.max_steps_per_epoch={steps}"]
    streamed = [f"data.{k}={v}" for k, v in STREAMED.items()]
    rates: dict[str, list[float]] = {"train from dataset dir": [], "train from shards, streamed": []}
    with process_group() as env, tempfile.TemporaryDirectory() as tmp:
        trainers = {
            "train from dataset dir": Trainer(load_train_config("id_only", [*sets, f'data.dir="{world}"']),
                                              Path(tmp) / "a", env, progress=False),
            "train from shards, streamed": Trainer(
                load_train_config("id_only", [*sets, *streamed, f'data.dir="{shards}"']),
                Path(tmp) / "b", env, progress=False),
        }
        for r in range(rounds + 1):  # round 0 warms up (first steps, allocator)
            names = list(trainers) if r % 2 == 0 else list(reversed(trainers))
            for name in names:
                trainer = trainers[name]
                _, rate = trainer.run_epoch()
                trainer.state.epoch, trainer.state.batch_in_epoch = trainer.state.epoch + 1, 0
                if r:
                    rates[name].append(rate)
    return rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=4000)
    parser.add_argument("--days", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40, help="training steps per timed epoch")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.users, args.days, args.rounds, args.steps = 800, 20, 1, 10
    with tempfile.TemporaryDirectory() as tmp:
        world = synthesize(Path(tmp) / "world", SynthConfig(n_users=args.users, n_days=args.days))
        from recsys.config import load_train_config

        cfg = load_train_config("id_only", TRAIN_SETTINGS)
        shards = write_shards(prepare(load_dataset(world), cfg.prepare_config()),
                              Path(tmp) / "shards").root
        n_train = ShardStream(shards, "train", 1).num_rows
        loader = loader_rounds(shards, args.rounds, 2048)
        train = train_rounds(world, shards, args.rounds, args.steps)
    rows = [{"case": name, "median_samples_per_s": round(statistics.median(v)),
             "rounds": [round(x) for x in v]} for name, v in {**loader, **train}.items()]
    print(f"train split: {n_train:,} rows; batch 2048; streamed: {STREAMED}")
    print_table(rows, ["case", "median_samples_per_s", "rounds"])
    ratio = statistics.median(train["train from shards, streamed"]) / \
        statistics.median(train["train from dataset dir"])
    loader_ratio = statistics.median(loader["ShardStream streamed"]) / \
        statistics.median(loader["BatchLoader (in memory)"])
    cached_ratio = statistics.median(loader["ShardStream one buffer (defaults)"]) / \
        statistics.median(loader["BatchLoader (in memory)"])
    print(f"training: streamed / in memory = {ratio:.3f}; loader alone: streamed {loader_ratio:.3f}, "
          f"one buffer {cached_ratio:.3f}; peak RSS {peak_rss_mb():.0f} MiB")
    if args.quick:
        return 0
    targets = [target("train samples/s: streamed from shards / in memory", ratio, ">=", 0.9)]
    path = write_results("shard_stream", rows, targets, "python benchmarks/shard_stream.py", extra={
        "train_rows": n_train, "streamed": STREAMED,
        "loader_ratio_streamed": round(loader_ratio, 4), "loader_ratio_one_buffer": round(cached_ratio, 4)})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
