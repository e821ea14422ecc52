"""`recsys evaluate` (recsys/evaluation/evaluate.py) on a trained em3 run: what it scores and what it
refuses."""

from __future__ import annotations

import json
import shutil

import pytest

from recsys.cli import main
from recsys.runs import rundir
from tests.recsys.train_fixtures import run_recsys


def test_evaluate_scores_a_split_with_the_run_vocabularies(em3_run, world, tmp_path):
    run, metrics = em3_run
    out = tmp_path / "eval"
    proc = run_recsys("evaluate", "--run", str(run), "--data", str(world), "--out", str(out),
                      "--no-track", "--quiet")
    assert proc.returncode == 0, proc.stderr[-2000:]
    evaluated = json.loads((out / "metrics.json").read_text())
    assert evaluated["labels"]["click"]["auc"] == pytest.approx(metrics["labels"]["click"]["auc"], abs=1e-6)
    assert (out / "predictions" / "test.parquet").is_file()


def test_evaluate_refuses_an_existing_evaluation_and_data_with_other_features(
        em3_run, world, tmp_path, capsys):
    run, _ = em3_run
    taken = rundir.init_run(tmp_path / "taken", config_toml="", kind="evaluate")
    before = (taken / "run.json").read_bytes()
    assert main(["evaluate", "--run", str(run), "--data", str(world), "--out", str(taken),
                 "--no-track", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"{taken} already holds an evaluation; pass another --out" in err
    assert "Traceback" not in err and (taken / "run.json").read_bytes() == before

    # The same log without the item categorical `year`: the run's model has a table for it.
    other = tmp_path / "other"
    shutil.copytree(world, other, ignore=shutil.ignore_patterns(".cache"))
    spec = (other / "dataset.toml").read_text()
    assert 'categorical = ["brand", "year"]' in spec
    (other / "dataset.toml").write_text(spec.replace('categorical = ["brand", "year"]',
                                                     'categorical = ["brand"]'))
    out = tmp_path / "eval-other"
    assert main(["evaluate", "--run", str(run), "--data", str(other), "--out", str(out),
                 "--no-track", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"{other} does not have the features the run was trained on" in err
    assert "item_year" in err and "Traceback" not in err
    assert not out.exists()

    assert main(["evaluate", "--run", str(world), "--data", str(world), "--no-track"]) == 2
    assert "not a training run directory (no config.toml)" in capsys.readouterr().err
