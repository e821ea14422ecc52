"""Fixtures of the serving tests: the session's two tiny runs (``id_only`` trained here with
tracking on, the shared ``em3`` run tracked after the fact) registered as versions of one model
in a real SQLite store, ``recsys select`` run over them, and a newer log of the world in which
some users are new (cold users for the parity test). Built once per session."""

from __future__ import annotations

import io
import json
import shutil
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest

from recsys.cli import main
from recsys.config import load_train_config
from recsys.runs.tracking import track_run
from recsys.training.train import train
from tests.recsys.train_fixtures import TINY

MODEL = "ranker"
NEW_USER = 1_000_000  # added to a user id in the newer log: a user the runs never saw


@dataclass(frozen=True)
class Registry:
    """Two registered versions of ``MODEL`` and the selection over them."""

    uri: str
    runs: dict[str, Path]       # preset -> run directory
    versions: dict[str, str]    # preset -> model version
    selection: dict


@pytest.fixture(scope="session")
def registry(world: Path, em3_run: tuple[Path, dict], tmp_path_factory) -> Registry:
    root = tmp_path_factory.mktemp("serving")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    id_only = root / "id_only"
    # One epoch is enough for a second candidate (its scores' quality is not what is tested).
    cfg = load_train_config("id_only", [*TINY, f'data.dir="{world}"', "train.epochs=1",
                                        "tracking.enabled=true", f'tracking.uri="{uri}"',
                                        f'tracking.model_name="{MODEL}"'])
    train(cfg, id_only, preset="id_only", progress=False)  # tracks and registers version 1
    # The shared em3 run trained without tracking; a copy is tracked now (what `recsys track
    # sync` does), so the other tests' run directory stays as it was.
    em3 = root / "em3"
    shutil.copytree(em3_run[0], em3)
    result = track_run(em3, tracking_uri=uri, model_name=MODEL)
    assert result.synced, result.error
    versions = {"id_only": json.loads((id_only / "run.json").read_text())["tracking"]["model_version"],
                "em3": result.model_version}
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["select", "--model", MODEL, "--tracking-uri", uri, "--n-boot", "200"]) == 0
    return Registry(uri, {"id_only": id_only, "em3": em3}, versions, json.loads(out.getvalue()))


@pytest.fixture(scope="session")
def newer_world(world: Path, em3_run: tuple[Path, dict], tmp_path_factory) -> Path:
    """The world's log with every seventh user's rows of its last 30% of time under a new id:
    users no run has seen (the training split ends before; their test rows are cold-user
    rows); the items, their media and token cache (built by the em3 run) are the world's."""
    root = tmp_path_factory.mktemp("newer") / "world"
    shutil.copytree(world, root, symlinks=False)
    log = pl.read_parquet(root / "interactions.parquet")
    late = pl.col("timestamp") > pl.col("timestamp").quantile(0.7)
    log = log.with_columns(pl.when(late & (pl.col("user_id") % 7 == 0))
                           .then(pl.col("user_id") + NEW_USER).otherwise(pl.col("user_id"))
                           .alias("user_id"))
    log.write_parquet(root / "interactions.parquet")
    return root
