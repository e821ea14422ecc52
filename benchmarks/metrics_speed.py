"""AUC + GAUC speed of ``recsys.evaluation.metrics`` against a pandas groupby + scikit-learn reference.

    python benchmarks/metrics_speed.py [--sizes 1000000 10000000] [--users 100000]

Data: ``users`` users with their own base rates (so some users hold one class and are skipped
by GAUC), float32 probabilities as the scorer writes them. The reference is what one writes
without thinking about speed: ``roc_auc_score`` over all rows plus a pandas ``groupby`` that
calls ``roc_auc_score`` per user. Both are timed in the same process on the same arrays, and
their values are checked to agree to 1e-9. The float64 rows time the fallback path for scores
that float32 cannot hold exactly (one extra argsort).

Targets (issue): 10M rows ≤ 5 s for AUC + GAUC, and ≥ 20x faster than the reference.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import median_time, print_table, target, write_results  # noqa: E402
from recsys.evaluation.metrics import auc, gauc  # noqa: E402


def make_data(rows: int, users: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels int8, float32 probabilities, user ids int64) with per-user base rates."""
    rng = np.random.default_rng(seed)
    user = rng.integers(0, users, rows)
    rate = rng.beta(1, 4, users)[user]
    y = (rng.random(rows) < rate).astype(np.int8)
    logit = 1.2 * y + rng.normal(size=rows) + np.log(rate / (1 - rate))
    p = (1 / (1 + np.exp(-logit))).astype(np.float32)
    return y, p, user


def ours(y: np.ndarray, p: np.ndarray, user: np.ndarray) -> tuple[float, float]:
    return auc(y, p), gauc(y, p, user)[0]


def reference(y: np.ndarray, p: np.ndarray, user: np.ndarray) -> tuple[float, float]:
    """Plain pandas + scikit-learn: one roc_auc_score call per user with both classes."""
    df = pd.DataFrame({"y": y, "p": p, "user": user})
    overall = roc_auc_score(df["y"], df["p"])
    stats = df.groupby("user")["y"].agg(["size", "nunique"])
    both = stats.index[stats["nunique"] == 2]
    sub = df[df["user"].isin(both)]
    per_user = sub.groupby("user")[["y", "p"]].apply(lambda g: roc_auc_score(g["y"], g["p"]))
    weights = stats.loc[per_user.index, "size"]
    return float(overall), float((per_user * weights).sum() / weights.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of ours (median)")
    parser.add_argument("--ref-repeats", type=int, default=1,
                        help="timed runs of the (slow) reference (median)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()

    rows, targets = [], []
    for n in args.sizes:
        y, p, user = make_data(n, args.users)
        got = ours(y, p, user)
        t_auc = median_time(lambda y=y, p=p: auc(y, p), repeats=args.repeats)
        t_gauc = median_time(lambda y=y, p=p, u=user: gauc(y, p, u), repeats=args.repeats)
        p64 = p.astype(np.float64) + 1e-12  # not representable in float32: fallback path
        t_gauc64 = median_time(lambda y=y, p=p64, u=user: gauc(y, p, u), repeats=args.repeats)
        t0 = time.perf_counter()
        want = reference(y, p, user)
        t_ref = [time.perf_counter() - t0]
        for _ in range(args.ref_repeats - 1):
            t0 = time.perf_counter()
            reference(y, p, user)
            t_ref.append(time.perf_counter() - t0)
        t_ref_med = float(np.median(t_ref))
        diff = max(abs(got[0] - want[0]), abs(got[1] - want[1]))
        row = {"rows": n, "users": args.users,
               "users_counted": gauc(y, p, user)[1],
               "auc_s": round(t_auc, 3), "gauc_s": round(t_gauc, 3),
               "auc_gauc_s": round(t_auc + t_gauc, 3), "gauc_float64_s": round(t_gauc64, 3),
               "reference_s": round(t_ref_med, 2),
               "speedup": round(t_ref_med / (t_auc + t_gauc), 1),
               "auc": round(got[0], 6), "gauc": round(got[1], 6), "max_abs_diff": diff}
        rows.append(row)
        print_table([row])
        if n == 10_000_000:
            targets.append(target("auc_gauc_10M_rows_s", t_auc + t_gauc, "<=", 5.0))
            targets.append(target("speedup_vs_pandas_sklearn_10M", row["speedup"], ">=", 20.0))
        targets.append(target(f"max_abs_diff_vs_reference_{n}", diff, "<=", 1e-9))
    print()
    print_table(rows, ["rows", "users", "auc_s", "gauc_s", "auc_gauc_s", "gauc_float64_s",
                       "reference_s", "speedup", "max_abs_diff"])
    print_table(targets)
    if not args.no_write:
        cmd = "python benchmarks/metrics_speed.py " + " ".join(sys.argv[1:])
        path = write_results("metrics_speed", rows, targets, command=cmd.strip(),
                             extra={"note": "ours: median of --repeats runs; reference: median "
                                    "of --ref-repeats runs (it takes minutes at 10M rows)"})
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
