"""em3's quality in float32 and with the Q-Former under CPU bf16 (``content.cpu_precision``).

    python benchmarks/em3_parity.py [--datasets synth movielens] [--seeds 0 1 2]

Trains the ``em3`` preset (default ``tiny`` towers) once per dataset × seed × precision with
``recsys train`` (``benchmarks/quality_runs.train_once``: one process per run, tracking off,
a finished run reused) and scores each run's test predictions. Prints the runs and writes
``benchmarks/.data/em3_parity.json``; ``benchmarks/em3_speed.py`` reads that file into its
results (the parity targets: each metric's bf16 mean within ``TOLERANCE`` of float32's).
``--data NAME=DIR`` uses an already prepared dataset directory instead of
``quality_runs.dataset_dir`` (e.g. when this script runs from a snapshot of the repository,
so that edits made while the runs train cannot reach them).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.quality_runs import METRICS, WORK, dataset_dir, train_once  # noqa: E402

PRECISIONS = ("fp32", "bf16")
TOLERANCE = 0.002  # |bf16 mean - fp32 mean| allowed per metric (issue 30, step 3)
PARITY_METRICS = ("auc", "gauc", "auc_cold_item")
RESULTS = WORK / "em3_parity.json"


def run_dir(root: Path, name: str, precision: str, seed: int) -> Path:
    return root / "runs" / f"{name}-em3-parity" / f"em3-{precision}-s{seed}"


def best_valid_auc(path: Path) -> float:
    """The run's best validation AUC of the primary label (its early-stopping score)."""
    from recsys.runs.rundir import read_history

    history = read_history(path)
    label = next(iter(history[0]["valid"]["labels"]))
    return max(r["valid"]["labels"][label]["auc"] for r in history)


def summary(runs: dict[str, dict[str, list[dict]]]) -> dict[str, dict]:
    """Per dataset: each precision's mean of every ``PARITY_METRICS`` metric over the seeds both
    precisions finished, bf16 - fp32, and whether that is within ``TOLERANCE``."""
    out = {}
    for name, by_precision in runs.items():
        seeds = sorted(set.intersection(*({r["seed"] for r in by_precision.get(p, [])}
                                          for p in PRECISIONS)))
        if not seeds:
            continue
        row: dict = {"seeds": seeds}
        for metric in (*PARITY_METRICS, "valid_auc"):
            mean = {p: statistics.fmean(r[metric] for r in by_precision[p]
                                        if r["seed"] in seeds and r[metric] is not None)
                    for p in PRECISIONS}
            diff = mean["bf16"] - mean["fp32"]
            row[metric] = {"fp32": round(mean["fp32"], 5), "bf16": round(mean["bf16"], 5),
                           "difference": round(diff, 5),
                           "within_tolerance": abs(diff) <= TOLERANCE}
        out[name] = row
    return out


def merged(paths: list[Path]) -> dict | None:
    """The runs of several results files of this script (e.g. one per dataset, written by
    invocations that ran side by side) as one ``{"runs", "summary"}``; None without any."""
    runs: dict[str, dict[str, list[dict]]] = {}
    for path in paths:
        for name, by_precision in json.loads(path.read_text())["runs"].items():
            for precision, records in by_precision.items():
                known = runs.setdefault(name, {}).setdefault(precision, [])
                seeds = {r["seed"] for r in records}
                known[:] = [r for r in known if r["seed"] not in seeds] + records
    return {"runs": runs, "summary": summary(runs)} if runs else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["synth", "movielens"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--data", action="append", default=[], metavar="NAME=DIR",
                        help="a prepared dataset directory for NAME (repeatable)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"default {RESULTS}")
    args = parser.parse_args(argv)
    given = dict(item.split("=", 1) for item in args.data)
    runs: dict[str, dict[str, list[dict]]] = {}
    if args.out.is_file():
        runs = json.loads(args.out.read_text())["runs"]
    for seed in args.seeds:  # seed-major: a cut-short invocation still has pairs to compare
        for name in args.datasets:
            data = Path(given[name]) if name in given else dataset_dir(name)
            if data is None:
                continue
            for precision in PRECISIONS:
                path = run_dir(WORK, name, precision, seed)
                m = train_once(data, "em3", seed, path,
                               [f'content.cpu_precision="{precision}"'])
                label = next(iter(m["labels"]))
                record = {"seed": seed, **{k: m["labels"][label][k] for k in METRICS},
                          "valid_auc": best_valid_auc(path),
                          "train_samples_per_s": m["throughput"]["train_samples_per_s"]}
                kept = [r for r in runs.setdefault(name, {}).setdefault(precision, [])
                        if r["seed"] != seed]
                runs[name][precision] = [*kept, record]
                print(f"{name} {precision} seed {seed}: " + ", ".join(
                    f"{k} {record[k]:.4f}" for k in (*PARITY_METRICS, "valid_auc")), flush=True)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps({"runs": runs, "summary": summary(runs)},
                                               indent=1))
    print(json.dumps(summary(runs), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
