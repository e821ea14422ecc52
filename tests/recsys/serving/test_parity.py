"""The champion from the registry scores rows exactly as ``recsys evaluate`` does (issue 26,
item 2): ``id_only`` and ``em3`` trained with tracking on, ``recsys select``, then
``mlflow.pyfunc.load_model("models:/NAME@champion")`` (and the other version by number) on the
test rows of a newer log, cold items and unknown users included, against the predictions
``recsys evaluate`` writes for the same rows."""

from __future__ import annotations

from pathlib import Path

import mlflow
import polars as pl
import pytest
from mlflow import MlflowClient

from recsys.cli import main
from recsys.serving.replay import replay_requests
from tests.recsys.serving.conftest import MODEL, Registry


@pytest.fixture
def registry_uri(registry: Registry, monkeypatch):
    """MLflow's tracking and registry URIs point at the session's store for this test only
    (through the environment, as a user points MLflow at a store: ``mlflow.set_*_uri`` would
    outlive the test)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", registry.uri)
    assert mlflow.get_registry_uri() == registry.uri
    return registry.uri


def _evaluate(run: Path, data: Path, out: Path) -> pl.DataFrame:
    """``recsys evaluate``'s predictions of the test split (through the CLI, in process)."""
    assert main(["evaluate", "--run", str(run), "--data", str(data), "--out", str(out),
                 "--no-track", "--quiet"]) == 0
    return pl.read_parquet(out / "predictions" / "test.parquet")


@pytest.mark.parametrize("preset", ["id_only", "em3"])
def test_a_registered_version_scores_like_recsys_evaluate(preset, registry, registry_uri,
                                                          newer_world, tmp_path):
    version = registry.versions[preset]
    client = MlflowClient(registry.uri)
    mv = client.get_model_version(MODEL, version)
    assert mv.source.endswith("/model") and mv.tags["recsys.servable"] == "true"
    # Selection ran over both versions; the champion is loaded by its alias.
    champion = registry.selection["champion_after"]
    assert {d["version"] for d in registry.selection["decisions"]} == set(registry.versions.values())
    uri = f"models:/{MODEL}@champion" if version == champion else f"models:/{MODEL}/{version}"

    expected = _evaluate(registry.runs[preset], newer_world, tmp_path / "eval")
    assert expected["cold_item"].sum() > 0 and expected["cold_user"].sum() > 0
    requests = replay_requests(registry.runs[preset], newer_world, "test")
    model = mlflow.pyfunc.load_model(uri)
    try:
        scores = model.predict(requests.to_pandas())
    finally:
        model.unwrap_python_model().close()
    served = pl.concat([requests.select("row_id"), pl.from_pandas(scores)], how="horizontal")
    both = expected.join(served, on="row_id", suffix="_served")
    assert both.height == expected.height == requests.height
    heads = [c for c in scores.columns if c.startswith("pred_")]
    assert heads == [c for c in expected.columns if c.startswith("pred_")]
    for slice_ in (pl.lit(True), pl.col("cold_item"), pl.col("cold_user")):
        rows = both.filter(slice_)
        for head in heads:
            gap = (rows[head] - rows[f"{head}_served"]).abs().max()
            assert gap <= 1e-5, (preset, head, gap)
