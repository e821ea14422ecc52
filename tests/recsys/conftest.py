"""Fixtures shared by the training tests of several files: the tiny synthetic world and one
em3 run trained on it (both built once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsys.config import load_train_config
from recsys.training.train import train
from tests.recsys.run_fixtures import fresh_store, truth_frame, with_predictions
from tests.recsys.train_fixtures import TINY, make_world


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> Path:
    return make_world(tmp_path_factory.mktemp("train"))


@pytest.fixture(scope="session")
def em3_run(world: Path, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("runs") / "em3"
    cfg = load_train_config("em3", [*TINY, f'data.dir="{world}"'])
    metrics = train(cfg, out, preset="em3", progress=False)
    return out, metrics


@pytest.fixture
def store(tmp_path, tmp_path_factory) -> str:
    """A fresh SQLite MLflow store of one test (tracking and registry)."""
    return fresh_store(tmp_path, tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def preds():
    """Truths of 30 users x 10 rows with noisy predictions, for runs made by hand."""
    return with_predictions(truth_frame(n_users=30, rows_per_user=10), noise=1.0)
