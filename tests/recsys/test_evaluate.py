"""`recsys evaluate` (recsys/evaluate.py) on a trained em3 run."""

from __future__ import annotations

import json

import pytest

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
