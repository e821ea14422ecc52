"""The CPU training step of ``id_only`` on real batches, and what each speed-up is worth.

Each variant trains the ``id_only`` preset's model (``recsys.train.Trainer``, one intra-op
thread) on the synthetic world and on MovieLens (when present) and times ``train_step`` —
forward, loss, backward with the fused sparse optimizer, dense optimizer step — on the same
pre-built training batches, so data loading is not measured. Variants:

* ``shipped``: the library as shipped;
* ``no_malloc_tuning``: glibc malloc's defaults (``recsys.perf.keep_freed_memory`` skipped).

Every variant runs in its own process (malloc settings are per process) and the variants are
interleaved round by round, so a slow minute on a shared machine hits all of them; the
figure is the median over rounds of each process's best-of-repeats step time.

    python benchmarks/train_step.py               # writes results/train_step.json
    python benchmarks/train_step.py --rounds 1    # quicker, noisier
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import print_table, target, write_results  # noqa: E402

VARIANTS = ("shipped", "no_malloc_tuning")
WARMUP, STEPS, REPEATS = 10, 40, 4
# On MovieLens the tuning must pay (glibc's defaults fault hundreds of pages per step there);
# on the synthetic world glibc already settles, and the tuning must not cost more than this
# machine's run-to-run noise (~5%).
MIN_SPEEDUP = {"movielens": 1.05, "synth": 0.95}


def run_case(case: dict) -> dict:
    """In a subprocess: build the trainer with ``case["variant"]`` and time its steps."""
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(29600 + os.getpid() % 1000))
    import recsys.train
    from ranking.dist import init_process_group_from_env
    from recsys.config import load_train_config

    if case["variant"] == "no_malloc_tuning":
        recsys.train.keep_freed_memory = lambda: False
    cfg = load_train_config("id_only", [f'data.dir="{case["data"]}"', "train.threads=1",
                                        "tracking.enabled=false"])
    env = init_process_group_from_env()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = recsys.train.Trainer(cfg, Path(tmp), env, progress=False)
        trainer.model.train()
        batches = list(itertools.islice(trainer.loader, WARMUP + STEPS))
        for b in batches[:WARMUP]:
            trainer.train_step(b)
        best = float("inf")
        usage = resource.getrusage(resource.RUSAGE_SELF)
        for _ in range(REPEATS):
            t0 = time.perf_counter()
            for b in batches[WARMUP:]:
                trainer.train_step(b)
            best = min(best, (time.perf_counter() - t0) / STEPS)
        after = resource.getrusage(resource.RUSAGE_SELF)
    steps = REPEATS * STEPS
    # Page faults and kernel time are what the malloc tuning removes; unlike wall time they
    # hardly depend on what else the machine is doing.
    return {"step_s": best, "batch_size": batches[0].size,
            "page_faults_per_step": (after.ru_minflt - usage.ru_minflt) / steps,
            "sys_ms_per_step": (after.ru_stime - usage.ru_stime) / steps * 1e3}


def in_subprocess(case: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--case", json.dumps(case)], cwd=ROOT,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{case} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--datasets", nargs="+", default=["synth", "movielens"],
                        choices=["synth", "movielens"])
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))))
        return 0
    from benchmarks.quality import dataset_dir

    rows, targets = [], []
    load_before = os.getloadavg()
    for name in args.datasets:
        data = dataset_dir(name)
        if data is None:
            continue
        runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
        for r in range(args.rounds):
            for variant in VARIANTS:
                out = in_subprocess({"variant": variant, "data": str(data)})
                runs[variant].append(out)
                print(f"{name} round {r + 1}/{args.rounds} {variant}: "
                      f"{out['step_s'] * 1e3:.2f} ms, {out['page_faults_per_step']:.0f} page "
                      f"faults/step", flush=True)
        times = {v: [o["step_s"] for o in runs[v]] for v in VARIANTS}
        base = statistics.median(times["shipped"])
        for variant in VARIANTS:
            step = statistics.median(times[variant])
            rows.append({"dataset": name, "variant": variant, "step_ms": round(step * 1e3, 2),
                         "samples_per_s": round(runs[variant][0]["batch_size"] / step, 1),
                         "shipped_speedup": round(step / base, 3),
                         "page_faults_per_step": round(statistics.median(
                             o["page_faults_per_step"] for o in runs[variant]), 1),
                         "sys_ms_per_step": round(statistics.median(
                             o["sys_ms_per_step"] for o in runs[variant]), 2),
                         "rounds_ms": [round(t * 1e3, 2) for t in times[variant]]})
        ratio = statistics.median(times["no_malloc_tuning"]) / base
        targets.append(target(f"{name}_shipped_vs_no_malloc_tuning_speedup", ratio, ">=",
                              MIN_SPEEDUP[name]))
    print_table(rows, ["dataset", "variant", "step_ms", "samples_per_s", "shipped_speedup",
                       "page_faults_per_step", "sys_ms_per_step"])
    load_after = os.getloadavg()
    note = ("id_only preset, 1 intra-op thread, batch of the preset; step = forward + loss + "
            "backward (fused sparse optimizer inside) + dense optimizer step on pre-built "
            f"batches. shipped_speedup = variant step time / shipped step time. 1-minute load average "
            f"before/after: {load_before[0]:.1f}/{load_after[0]:.1f}.")
    path = write_results("train_step", rows, targets, command="python benchmarks/train_step.py",
                         extra={"config": {"warmup": WARMUP, "steps": STEPS, "repeats": REPEATS,
                                           "rounds": args.rounds}, "note": note})
    print(note)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
