"""benchmarks/gpu_check.sh's CPU fallback: with no CUDA device visible it runs every step on
CPU (the content path and dense tower fp32 vs bf16, a sharded id_only run under gloo), writes
its results where it was told, not into benchmarks/results/, and says so."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from data.synth import SynthConfig, synthesize

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"


def test_cpu_fallback_runs_every_step_and_records_it(tmp_path):
    data = synthesize(tmp_path / "world", SynthConfig(n_users=80, n_items=60, n_days=30, seed=3))
    out = tmp_path / "out"
    gpu_results = REPO / "benchmarks" / "results" / "gpu"
    before = {p: p.stat().st_mtime for p in gpu_results.glob("*")} if gpu_results.is_dir() else {}
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "GPU_CHECK_OUT": str(out),
           "GPU_CHECK_DATA": str(data), "GPU_CHECK_STEPS": "3", "PYTHON": str(
               REPO / ".venv" / "bin" / "python") if (REPO / ".venv").is_dir() else "python3"}
    proc = subprocess.run(["bash", str(SCRIPT)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=480)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "no CUDA device visible to torch: CPU fallback" in proc.stdout

    rows = json.loads((out / "device_precision.json").read_text())["rows"]
    content = {r["precision"]: r for r in rows if r["part"] == "content path"}
    tower = {r["precision"]: r for r in rows if r["part"] == "dense tower"}
    assert set(content) == set(tower) == {"fp32", "bf16"}
    assert all(r["step_ms"] > 0 and r["samples_per_s"] > 0 for r in [*content.values(),
                                                                     *tower.values()])

    record = json.loads((out / "gpu_check.json").read_text())
    assert record["device"] == "cpu" and record["device_precision"] == "ok"
    sharded = record["sharded_id_only"]
    assert sharded["backend"] == "gloo" and sharded["status"] == "ok"
    assert sharded["throughput"]["train_samples_per_s"] > 0
    assert "[2/2] sharded id_only training under gloo, 1 process(es), 3 steps" in proc.stdout
    # The GPU results are another machine's figures: the fallback never touches them.
    after = {p: p.stat().st_mtime for p in gpu_results.glob("*")} if gpu_results.is_dir() else {}
    assert after == before
