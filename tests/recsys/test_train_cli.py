"""`recsys train` through the CLI: what it refuses, with one message, exit 2 and no run
directory written or changed."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsys.cli import main
from recsys.config import load_train_config, train_config_toml
from recsys.runs import rundir
from tests.recsys.train_fixtures import TINY, run_recsys, set_args


@pytest.mark.parametrize(("override", "message"), [
    ('ranking.table_sharding={movie={sharding_type="table_wise"}}',
     "error: ranking: table_sharding names unknown table 'movie'"),
    ('ranking.table_sharding={item={sharding_type="data_parallel"}}',
     "error: ranking: data_parallel sharding of sequence table 'table_item' fails"),
])
def test_sharding_the_device_cannot_run_is_one_clear_message_and_exit_2(world, tmp_path, override,
                                                                        message):
    # Found only when the model is sharded (it depends on the tables and the device), and still
    # bad input: one message, exit 2, no run directory.
    proc = run_recsys("train", "id_only", "--data", str(world), "--out", str(tmp_path / "r"),
                      "--set", override, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "r").exists()


def test_compile_on_without_a_cpp_compiler_is_one_clear_message_and_exit_2(world, tmp_path):
    # Inductor reads $CXX: with none it cannot build the CPU kernels. "auto" would train eager
    # (tests/recsys/test_perf.py); "on" is a promise the machine cannot keep.
    proc = run_recsys("train", "id_only", "--data", str(world), "--out", str(tmp_path / "r"),
                      "--set", 'train.compile="on"', timeout=120,
                      env={"CXX": "/nonexistent/c++"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert 'error: train.compile = "on" but Inductor found no C++ compiler' in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "r").exists()


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(("state", "resume", "message"), [
    ("running", False, "{run} already holds a run; pass --resume to continue it or choose another --out"),
    ("finished", False, "{run} already holds a run; pass --resume"),
    ("missing", True, "--resume: {run} holds no run to continue"),
    ("finished", True, "--resume: the run in {run} has already finished"),
])
def test_train_neither_overwrites_a_run_nor_resumes_one_that_cannot_continue(
        world, tmp_path, capsys, state, resume, message):
    """Training into a directory that holds a run needs --resume (it would overwrite the run
    otherwise); --resume needs an unfinished run. Refused before anything is written."""
    run = tmp_path / "run"
    if state != "missing":
        saved = train_config_toml(load_train_config("id_only", TINY))
        rundir.init_run(run, config_toml=saved, preset="id_only")
        if state == "finished":
            rundir.finish_run(run)
    before = _snapshot(tmp_path)
    argv = ["train", "id_only", "--data", str(world), "--out", str(run), "--quiet",
            *set_args(TINY), *(["--resume"] if resume else [])]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message.format(run=run) in err and "Traceback" not in err
    assert _snapshot(tmp_path) == before
    assert run.exists() == (state != "missing")
