"""Shared helpers for benchmark scripts: machine description, timing, result files (docs/design.md §8)."""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEVICES = ("cpu", "cuda")
GPU_SUBDIR = "gpu"  # results/gpu/: the CUDA runs' JSON


def results_dir(device: str = "cpu") -> Path:
    """Where a benchmark writes its JSON: ``results/`` for CPU runs, ``results/gpu/`` for CUDA
    runs, so GPU figures (another machine, other ratios) never overwrite or mix with CPU ones."""
    return RESULTS_DIR if device == "cpu" else RESULTS_DIR / GPU_SUBDIR


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=DEVICES, default="cpu",
                        help="where the measured module runs (default cpu); cuda results go to "
                             "benchmarks/results/gpu/")


def device_command(script: str, device: str) -> str:
    """The command line that reproduces a run of ``benchmarks/<script>`` on ``device``."""
    return f"python benchmarks/{script}" + ("" if device == "cpu" else f" --device {device}")


def check_device(device: str) -> None:
    """Exits with status 2 and one line when ``device`` is ``cuda`` and no GPU is visible."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda: torch sees no CUDA device on this machine "
              f"(torch {torch.__version__}, built for CUDA {torch.version.cuda})", file=sys.stderr)
        raise SystemExit(2)


def synchronize(device: str) -> None:
    """Waits for queued GPU work, so wall-clock times cover the kernels; no-op on CPU."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def machine() -> dict[str, Any]:
    """CPU model, cores, memory and GPU of the machine the benchmark runs on."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    with contextlib.suppress(ValueError, OSError):
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": mem_gb, "gpu": gpu,
            "python": sys.version.split()[0]}


def median_time(fn: Callable[[], Any], repeats: int = 3, warmup: int = 1,
                device: str = "cpu") -> float:
    """Median wall-clock seconds of ``fn`` over ``repeats`` runs after ``warmup`` runs (on
    ``cuda``, each timed run ends when its kernels have finished)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MiB); run each case in its own process
    when comparing peaks."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def target(name: str, value: float, op: str, threshold: float) -> dict[str, Any]:
    """A target row: ``op`` is one of '<=', '>=', '<', '>'."""
    met = {"<=": value <= threshold, ">=": value >= threshold, "<": value < threshold,
           ">": value > threshold}[op]
    return {"name": name, "value": round(float(value), 4), "target": f"{op} {threshold}", "met": bool(met)}


def write_results(name: str, rows: list[dict], targets: list[dict], command: str,
                  extra: dict | None = None, device: str = "cpu") -> Path:
    """Writes ``<results_dir(device)>/<name>.json`` atomically and returns its path."""
    directory = results_dir(device)
    directory.mkdir(parents=True, exist_ok=True)
    out = {"benchmark": name, "command": command, "machine": machine(), "device": device,
           "date": _dt.date.today().isoformat(), "rows": rows, "targets": targets, **(extra or {})}
    path = directory / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, indent=2) + "\n")
    tmp.replace(path)
    return path


def print_table(rows: list[dict], columns: list[str] | None = None) -> None:
    """Prints rows as an aligned text table."""
    if not rows:
        print("(no rows)")
        return
    columns = columns or list(rows[0])

    def fmt(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    widths = {c: max(len(c), *(len(fmt(r.get(c, ""))) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    print("  ".join("-" * widths[c] for c in columns))
    for r in rows:
        print("  ".join(fmt(r.get(c, "")).ljust(widths[c]) for c in columns))
