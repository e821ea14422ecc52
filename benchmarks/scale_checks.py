"""The scale benchmark's measuring and checking helpers (``benchmarks/scale.py``).

- ``measured_run``: runs a command in a fresh process and returns its wall time and the peak
  resident memory of the largest process of its tree (``RUSAGE_CHILDREN`` of a wrapper that
  has no other children), so one step's peak never mixes with another's.
- ``rank_coverage``: whether the rows that the ranks of a distributed epoch read are
  disjoint and together cover the split.
- ``growth_plot``: how preparation and training memory and time grow with the log's size.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def measured_run(command: Sequence[str], env: dict[str, str] | None = None,
                 log: Path | None = None) -> dict[str, Any]:
    """Runs ``command`` (from the repository root) in a wrapper process of its own and returns
    ``{"wall_s", "peak_rss_mb", "stdout"}``; ``peak_rss_mb`` is the largest resident set any
    process of the command's tree reached (per process, not summed: the ranks of a torchrun
    are separate processes). Output goes to ``log`` when given (appended), else is captured.

    Raises:
        RuntimeError: the command failed (its last output lines in the message).
    """
    wrapper = [sys.executable, str(Path(__file__).resolve()), "--measure", json.dumps(list(command))]
    t0 = time.perf_counter()
    proc = subprocess.run(wrapper, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    out_lines = proc.stdout.splitlines()
    if log is not None:
        with log.open("a") as fh:
            fh.write(f"$ {' '.join(command)}\n{proc.stdout}{proc.stderr}\n")
    if proc.returncode != 0 or not out_lines:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
        raise RuntimeError(f"{' '.join(command)} failed (exit {proc.returncode}):\n{tail}")
    peak = json.loads(out_lines[-1])["peak_rss_mb"]
    return {"wall_s": wall, "peak_rss_mb": peak, "stdout": "\n".join(out_lines[:-1])}


def _measure(command: list[str]) -> int:
    """The wrapper: run ``command``, pass its output through, then print the children's peak."""
    import resource

    proc = subprocess.run(command, cwd=ROOT)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"peak_rss_mb": round(peak, 1)}), flush=True)
    return proc.returncode


def rank_coverage(per_rank: Sequence[np.ndarray], split_rows: np.ndarray,
                  batch_size: int | None = None) -> dict[str, Any]:
    """How the row ids that each rank read in one epoch relate to the split's row ids.

    Args:
        per_rank: world_size arrays of row ids, one per rank (a rank reading a row twice
            counts as an overlap too).
        split_rows: every row id of the split.
        batch_size: when the ranks dropped their last partial batch (training with several
            ranks does), the batch size: each rank may then miss up to ``batch_size - 1`` rows
            more.

    Returns:
        ``{"world_size", "split_rows", "read_rows" (per rank), "overlap" (rows read more than
        once), "missing" (split rows no rank read), "missing_allowed", "foreign" (rows read
        that are not in the split), "ok"}``; ``ok`` means disjoint, nothing foreign and no more
        missing than allowed: fewer than world_size rows (the remainder a rank-equal cut
        drops), plus world_size * (batch_size - 1) with dropped last batches.
    """
    world = len(per_rank)
    every = np.concatenate([np.asarray(r, np.int64) for r in per_rank]) if world else np.zeros(0, np.int64)
    distinct, counts = np.unique(every, return_counts=True)
    split = np.unique(np.asarray(split_rows, np.int64))
    overlap = int((counts - 1).sum())
    missing = int(np.setdiff1d(split, distinct, assume_unique=True).size)
    foreign = int(np.setdiff1d(distinct, split, assume_unique=True).size)
    allowed = max(world, 1) - 1 + (world * (batch_size - 1) if batch_size else 0)
    return {"world_size": world, "split_rows": int(split.size),
            "read_rows": [int(len(r)) for r in per_rank], "overlap": overlap,
            "missing": missing, "missing_allowed": allowed, "foreign": foreign,
            "ok": overlap == 0 and foreign == 0 and missing <= allowed}


def growth_plot(rows: list[dict[str, Any]], path: Path,
                limits: Sequence[tuple[float, str]] = ()) -> Path:
    """Log-log plot of preparation peak RSS and wall time and training peak RSS per process
    against the log's rows; ``rows`` are the benchmark's per-size rows, ``limits`` (MiB,
    label) the memory targets, drawn as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(rows, key=lambda r: r["rows"])
    n = [r["rows"] for r in rows]
    fig, (mem, wall) = plt.subplots(1, 2, figsize=(10, 4))
    mem.plot(n, [r["prep_peak_rss_mb"] / 1024 for r in rows], "o-", label="preparation")
    for key, label in (("train1_peak_rss_mb", "training, 1 process"),
                       ("train2_peak_rss_mb", "training, 2 processes (per process)")):
        if all(r.get(key) is not None for r in rows):
            mem.plot(n, [r[key] / 1024 for r in rows], "s--", label=label)
    for limit, label in limits:
        mem.axhline(limit / 1024, color="grey", linestyle=":", linewidth=1)
        mem.annotate(label, (n[0], limit / 1024), textcoords="offset points", xytext=(0, 3),
                     fontsize=8, color="grey")
    mem.set(xscale="log", yscale="log", xlabel="interactions", ylabel="peak RSS (GiB)",
            title="Peak memory")
    mem.legend(loc="lower right")
    prep_min = [r["prep_s"] / 60 for r in rows]
    wall.plot(n, prep_min, "o-", label="preparation")
    # What linear growth from the smallest size would give, to read the curve against.
    wall.plot(n, [prep_min[0] * k / n[0] for k in n], ":", color="grey", label="linear in rows")
    wall.set(xscale="log", yscale="log", xlabel="interactions", ylabel="wall time (min)",
             title="Preparation time")
    wall.legend()
    for ax in (mem, wall):
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--measure":
        sys.exit(_measure(json.loads(sys.argv[2])))
    print("usage: python benchmarks/scale_checks.py --measure '[\"cmd\", \"arg\"]'", file=sys.stderr)
    sys.exit(2)
