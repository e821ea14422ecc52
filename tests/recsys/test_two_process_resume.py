"""A fault mid-run under ``torchrun``: one of two ranks is killed, the run stops within seconds,
and ``--resume`` with both ranks ends with the metrics of an uninterrupted two-process run.

Kept cheap: a small synthetic world, the ID-only preset with a tiny model, two short epochs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from data.synth import SynthConfig, synthesize
from tests.recsys.train_fixtures import REPO, set_args

pytestmark = pytest.mark.slow

SETTINGS = ["data.max_history=5", "data.tail_days=7", "ranking.embedding_dim=4",
            "ranking.attention_hidden=[8]", "ranking.over_arch=[8]", "train.epochs=2",
            "train.batch_size=64", "train.eval_batch_size=1024", "train.threads=1",
            "train.compile=off", "train.checkpoint_every=2", "tracking.enabled=false"]


def torchrun(world: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            "-m", "recsys", "train", "id_only", "--data", str(world), "--out", str(out), "--quiet",
            *set_args(SETTINGS), *extra]


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def worker_of_rank(launcher: int, rank: int) -> int | None:
    """The pid of the ``torchrun`` worker (a child of ``launcher``) that runs ``rank``."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            status = (proc / "status").read_text()
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:  # gone, or not ours
            continue
        ppid = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("PPid:"))
        if ppid == launcher and f"RANK={rank}".encode() in environ:
            return int(proc.name)
    return None


@contextmanager
def launched(command: list[str]) -> Iterator[subprocess.Popen]:
    """A running ``torchrun``; stopped (and its workers with it) if the test leaves early."""
    proc = subprocess.Popen(command, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()  # torchrun passes SIGTERM on to its workers
            proc.communicate(timeout=60)


def test_a_killed_rank_stops_the_run_and_both_ranks_resume_it_exactly(tmp_path, record_property):
    world = synthesize(tmp_path / "world", SynthConfig(n_users=80, n_items=60, n_days=30, seed=3))
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    # The uninterrupted run goes alongside the one to be killed (the launches dominate the cost).
    with launched(torchrun(world, straight)) as reference, launched(torchrun(world, killed)) as run:
        deadline = time.time() + 240
        # Kill rank 1 once the first checkpoint (mid-epoch) of both ranks' shards is in place.
        while not list((killed / "checkpoints").glob("step_*")) and time.time() < deadline:
            assert run.poll() is None, "training ended before a rank could be killed"
            time.sleep(0.05)
        victim = worker_of_rank(run.pid, 1)
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        killed_at = time.time()
        _, err = run.communicate(timeout=120)
        stopped_after = time.time() - killed_at
        record_property("seconds_from_kill_to_exit", round(stopped_after, 1))
        assert run.returncode != 0, err[-3000:]
        # The surviving rank does not wait out the 10-minute collective timeout.
        assert stopped_after < 60, stopped_after
        assert not (killed / "metrics.json").exists()
        assert json.loads((killed / "run.json").read_text())["status"] != "finished"
        _, err = reference.communicate(timeout=300)
        assert reference.returncode == 0, err[-3000:]

    resumed = subprocess.run(torchrun(world, killed, "--resume"), cwd=REPO, env=ENV,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from step_" in resumed.stdout
    a = json.loads((straight / "metrics.json").read_text())
    b = json.loads((killed / "metrics.json").read_text())
    assert b["rows"] == a["rows"]
    for label in ("click", "like"):
        for key in ("auc", "gauc", "logloss"):
            assert b["labels"][label][key] == pytest.approx(a["labels"][label][key], abs=1e-6), (label, key)
    history = [json.loads(line) for line in (killed / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2]
    step = sorted((killed / "checkpoints").glob("step_*"))[-1]
    assert json.loads((step / "meta.json").read_text())["world_size"] == 2
