"""`recsys train` through the CLI: what it refuses, with one message, exit 2 and no run
directory written."""

from __future__ import annotations

import pytest

from tests.recsys.train_fixtures import run_recsys


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
