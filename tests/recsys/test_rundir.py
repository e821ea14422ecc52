"""The run directory API that training and evaluation write through."""

from __future__ import annotations

import json
import math

import polars as pl
import pytest

from recsys.runs import rundir
from tests.recsys.run_fixtures import make_run, truth_frame, with_predictions


def test_init_writes_config_and_meta(tmp_path):
    run_dir = rundir.init_run(tmp_path / "r1", config_toml="[train]\nlr = 0.1\n", preset="demo",
                              model_name="ctr", labels=["click", "like"], dataset_dir="/d",
                              dataset_fingerprint="fp", commit="c0ffee")
    assert (run_dir / "config.toml").read_text() == "[train]\nlr = 0.1\n"
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["status"] == "running" and meta["finished_at"] is None
    assert meta["labels"] == ["click", "like"] and meta["git_commit"] == "c0ffee"
    assert meta["dataset"] == {"dir": "/d", "fingerprint": "fp"}
    assert meta["tracking"] == {"uri": None, "run_id": None, "synced": False,
                                "model_version": None, "error": None}
    with pytest.raises(FileExistsError):
        rundir.init_run(run_dir, config_toml="")
    meta = rundir.update_meta(run_dir, tracking={"synced": True})
    assert meta["tracking"]["synced"] is True and meta["tracking"]["uri"] is None  # merged
    assert rundir.finish_run(run_dir)["status"] == "finished"
    with pytest.raises(ValueError):
        rundir.finish_run(run_dir, "exploded")


def test_history_survives_a_torn_last_line(tmp_path):
    run_dir = rundir.init_run(tmp_path / "r", config_toml="", commit="x")
    rundir.append_history(run_dir, {"epoch": 1, "train_loss": 0.5})
    rundir.append_history(run_dir, {"epoch": 2, "train_loss": 0.4})
    with open(run_dir / "history.jsonl", "a") as fh:
        fh.write('{"epoch": 3, "train_lo')  # crash mid-write
    assert [r["epoch"] for r in rundir.read_history(run_dir)] == [1, 2]
    with pytest.raises(ValueError):
        rundir.append_history(run_dir, {"train_loss": 1.0})


def test_atomic_json_refuses_nan_and_leaves_no_temp_files(tmp_path):
    path = rundir.atomic_write_json(tmp_path / "m.json", {"auc": None})
    with pytest.raises(ValueError):
        rundir.atomic_write_json(path, {"auc": math.nan})
    assert json.loads(path.read_text()) == {"auc": None}  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_write_predictions_checks_columns(tmp_path):
    preds = with_predictions(truth_frame(n_users=5, rows_per_user=4), noise=1.0)
    path = rundir.write_predictions(tmp_path, "test", preds, ["like"])
    assert path == tmp_path / "predictions" / "test.parquet"
    back = pl.read_parquet(path)
    assert back.equals(preds)
    assert rundir.prediction_labels(back) == ["like"]  # retention heads are not labels
    assert sorted(p.name for p in path.parent.iterdir()) == ["test.parquet"]
    with pytest.raises(ValueError, match="lack column 'pred_click'"):
        rundir.write_predictions(tmp_path, "test", preds, ["like", "click"])
    with pytest.raises(ValueError, match="not unique"):
        rundir.write_predictions(tmp_path, "x", pl.concat([preds, preds]), ["like"])
    with pytest.raises(ValueError, match=r"leaves \[0, 1\]"):
        rundir.write_predictions(tmp_path, "x", preds.with_columns(pred_like=pl.lit(1.5)), ["like"])
    assert not (tmp_path / "predictions" / "x.parquet").exists()


def test_read_run_returns_everything(tmp_path):
    preds = with_predictions(truth_frame(n_users=8, rows_per_user=5), noise=1.0)
    run_dir = make_run(tmp_path, "r", preds, model_name="ctr", epochs=3)
    valid = {**json.loads((run_dir / "metrics.json").read_text()), "split": "valid"}
    assert rundir.write_metrics(run_dir, valid, main=False).name == "metrics_valid.json"
    run = rundir.read_run(run_dir)
    assert run.meta["status"] == "finished" and run.meta["finished_at"]
    assert run.labels == ["like"]
    assert [h["epoch"] for h in run.history] == [1, 2, 3]
    assert run.metrics["split"] == "test" and set(run.split_metrics) == {"valid"}
    assert run.predictions == {"test": run_dir / "predictions" / "test.parquet"}
    assert run.checkpoints == run_dir / "checkpoints"
    assert "lr = 0.001" in run.config_text
    with pytest.raises(FileNotFoundError):
        rundir.read_run(tmp_path)
