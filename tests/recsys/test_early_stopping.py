"""Early stopping and best-checkpoint scoring (recsys/training/train.py ``Trainer.fit`` and ``test``),
driven by scripted validation scores.

The model trains for real; only the validation metric that early stopping reads is replaced
by a scripted value per epoch, so which epoch is best, when training stops and which weights
score the test split are known in advance. The last epoch trained is never the best one, so
scoring test with the latest weights instead of the best gives other predictions.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ranking.checkpoint import latest_checkpoint, step_dir
from recsys.config import load_train_config
from recsys.evaluation.evaluate import evaluate
from recsys.training.train import Trainer, train
from tests.recsys.train_fixtures import TINY

STEPS = 4  # training steps per epoch
# id_only, float32 tower (so that evaluation scores rows bit-for-bit like the run's own test
# scoring), a few steps per epoch, up to five epochs.
LOOP = [*TINY, "train.epochs=5", f"train.max_steps_per_epoch={STEPS}", "train.compile=off",
        'ranking.cpu_precision="fp32"']

# Validation scores per epoch. logloss: lower is better, so epoch 2 (0.50) is the best, epochs
# 3 and 4 are worse, and epoch 5 would be the best of all if training got there. auc: the same
# story with higher = better.
SCRIPTS = {"logloss": [0.60, 0.50, 0.55, 0.58, 0.40], "auc": [0.60, 0.70, 0.65, 0.62, 0.90]}


def _train_scripted(world: Path, out: Path, metric: str, patience: int,
                    monkeypatch: pytest.MonkeyPatch) -> dict:
    """Trains id_only into ``out`` with the validation ``metric`` of epoch k replaced by
    ``SCRIPTS[metric][k - 1]``; returns the test metrics."""
    real_validate = Trainer.validate
    script = iter(SCRIPTS[metric])

    def scripted(self: Trainer):
        metrics, rate = real_validate(self)
        metrics["labels"][self.label][metric] = next(script)
        return metrics, rate

    cfg = load_train_config("id_only", [*LOOP, f'data.dir="{world}"', f"train.patience={patience}",
                                        f'train.early_stop_metric="{metric}"'])
    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "validate", scripted)
        return train(cfg, out, preset="id_only", progress=False)


def _history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def stopped_run(world: Path, tmp_path_factory) -> tuple[Path, dict]:
    """logloss, patience 1: best at epoch 2, stopped after epoch 4 (two epochs without gain)."""
    out = tmp_path_factory.mktemp("early") / "logloss"
    with pytest.MonkeyPatch.context() as patch:
        metrics = _train_scripted(world, out, "logloss", 1, patch)
    return out, metrics


def _check_stopped(run: Path, metrics: dict, metric: str, epochs: int, best: int) -> None:
    history = _history(run)
    assert [h["epoch"] for h in history] == list(range(1, epochs + 1))
    assert [h["valid"]["labels"]["click"][metric] for h in history] == SCRIPTS[metric][:epochs]
    assert metrics["best_epoch"] == best
    assert json.loads((run / "metrics.json").read_text())["best_epoch"] == best
    # checkpoints/best holds the weights saved at the end of the best epoch.
    assert latest_checkpoint(run / "checkpoints" / "best") == \
        step_dir(run / "checkpoints" / "best", best * STEPS)
    assert latest_checkpoint(run / "checkpoints") == step_dir(run / "checkpoints", epochs * STEPS)


def test_logloss_stops_after_patience_epochs_without_a_lower_loss(stopped_run):
    run, metrics = stopped_run
    # A rule that took the higher logloss as better would keep epoch 1 (0.60) and stop after 3.
    _check_stopped(run, metrics, "logloss", epochs=4, best=2)


@pytest.mark.parametrize(("metric", "patience", "epochs", "best"), [
    ("auc", 1, 4, 2),      # higher is better: 0.70 at epoch 2, two worse epochs stop it
    ("logloss", 2, 5, 5),  # two worse epochs are within patience 2: epoch 5 is reached and best
])
def test_early_stopping_follows_the_scripted_scores(world, tmp_path, monkeypatch, metric,
                                                    patience, epochs, best):
    metrics = _train_scripted(world, tmp_path / "run", metric, patience, monkeypatch)
    _check_stopped(tmp_path / "run", metrics, metric, epochs, best)


def _predictions(run: Path) -> pl.DataFrame:
    return pl.read_parquet(run / "predictions" / "test.parquet").sort("row_id")


def test_test_split_is_scored_with_the_best_checkpoint_not_the_latest(stopped_run, world, tmp_path):
    run, _ = stopped_run
    scored = _predictions(run)

    # An evaluation of the run loads checkpoints/best (epoch 2) and must give the run's own
    # test predictions, row by row.
    best = evaluate(run, world, out=tmp_path / "best", tracking=False, progress=False)
    assert best["evaluated"]["checkpoint"] == step_dir(run, 2 * STEPS).name
    from_best = _predictions(tmp_path / "best")
    assert from_best["row_id"].equals(scored["row_id"])
    np.testing.assert_allclose(from_best["pred_click"].to_numpy(), scored["pred_click"].to_numpy(),
                               rtol=0, atol=1e-6)

    # Without checkpoints/best, evaluation falls back to the latest checkpoint (epoch 4): its
    # weights trained two more epochs and score the same rows differently.
    latest_only = tmp_path / "latest-only"
    shutil.copytree(run, latest_only)
    shutil.rmtree(latest_only / "checkpoints" / "best")
    latest = evaluate(latest_only, world, out=tmp_path / "latest", tracking=False, progress=False)
    assert latest["evaluated"]["checkpoint"] == step_dir(run, 4 * STEPS).name
    from_latest = _predictions(tmp_path / "latest")
    assert from_latest["row_id"].equals(scored["row_id"])
    gap = np.abs(from_latest["pred_click"].to_numpy() - scored["pred_click"].to_numpy())
    assert gap.max() > 1e-3, gap.max()
