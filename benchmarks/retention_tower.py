"""What the `id_only` preset's own retention tower costs per training step.

Two trainers of the `id_only` preset in one process, one with ``ranking.retention_own_tower``
(as shipped) and one with the retention heads on the shared tower, time ``train_step`` on the
same pre-built training batches, alternating repeat by repeat (and which goes first): this
machine's step time differs by up to ~30% from one process to the next, so only a comparison
inside one process is worth reading. The figure is each configuration's median and best step
time over the repeats; the accuracy side of the choice is in ``benchmarks/quality.py``.

    python benchmarks/retention_tower.py            # writes results/retention_tower.json
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import print_table, write_results  # noqa: E402

WARMUP, STEPS, REPEATS = 20, 40, 8
CONFIGS = {"own tower (shipped)": "true", "shared tower": "false"}


def time_dataset(name: str, data: Path) -> list[dict]:
    import recsys.training.train
    from ranking.dist import init_process_group_from_env
    from recsys.config import load_train_config

    env = init_process_group_from_env()
    trainers, dirs = {}, []
    for label, own in CONFIGS.items():
        cfg = load_train_config("id_only", [f'data.dir="{data}"', "train.threads=1",
                                            "tracking.enabled=false",
                                            f"ranking.retention_own_tower={own}"])
        dirs.append(tempfile.TemporaryDirectory())
        trainers[label] = recsys.training.train.Trainer(cfg, Path(dirs[-1].name), env, progress=False)
        trainers[label].model.train()
    first = next(iter(trainers.values()))
    batches = list(itertools.islice(first.loader, WARMUP + STEPS))
    for trainer in trainers.values():  # compiles the dense tower, makes optimizer state
        for b in batches[:WARMUP]:
            trainer.train_step(b)
    steps: dict[str, list[float]] = {label: [] for label in trainers}
    for repeat in range(REPEATS):
        order = list(trainers) if repeat % 2 == 0 else list(trainers)[::-1]
        for label in order:
            t0 = time.perf_counter()
            for b in batches[WARMUP:]:
                trainers[label].train_step(b)
            steps[label].append((time.perf_counter() - t0) / STEPS)
    for d in dirs:
        d.cleanup()
    shared = statistics.median(steps["shared tower"])
    return [{"dataset": name, "config": label,
             "step_ms_median": round(statistics.median(v) * 1e3, 2),
             "step_ms_best": round(min(v) * 1e3, 2),
             "vs_shared_median": round(statistics.median(v) / shared, 3)}
            for label, v in steps.items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["synth", "movielens"],
                        choices=["synth", "movielens"])
    args = parser.parse_args(argv)
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(29600 + os.getpid() % 1000))
    from benchmarks.quality import dataset_dir

    rows = []
    for name in args.datasets:
        data = dataset_dir(name)
        if data is None:  # MovieLens absent: skipped, as every benchmark does
            print(f"{name}: no data, skipped")
            continue
        rows += time_dataset(name, data)
    print_table(rows)
    path = write_results("retention_tower", rows, [], "python benchmarks/retention_tower.py",
                         extra={"steps": STEPS, "repeats": REPEATS})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
