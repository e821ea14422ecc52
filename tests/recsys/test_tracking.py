"""MLflow tracking of run directories against a real SQLite store in a temp dir (no mocks), and
of a training run whose store was unreachable."""

from __future__ import annotations

import argparse
import json
import socket
import warnings

import pytest
from mlflow import MlflowClient

from recsys.commands import track_cmd
from recsys.config import load_train_config
from recsys.errors import UsageError
from recsys.runs import rundir
from recsys.runs.tracking import TrackingWarning, default_tracking_uri, track_run
from recsys.training.train import train
from tests.recsys.run_fixtures import make_run
from tests.recsys.train_fixtures import TINY, run_recsys


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again on exit: nothing listens there


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="recsys")
    track_cmd.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def _all_runs(client: MlflowClient):
    exps = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(exps)


def test_run_is_logged_with_params_metrics_artifacts_and_version(tmp_path, store, preds):
    run_dir = make_run(tmp_path, "baseline-1", preds, model_name="ctr", epochs=2)
    result = track_run(run_dir, store)
    assert result.synced and result.model_version == "1" and result.error is None

    client = MlflowClient(store)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "baseline-1"
    assert run.data.params["train.lr"] == "0.001" and run.data.params["model.sizes"] == "[64, 32]"
    tags = run.data.tags
    assert tags["recsys.dataset_fingerprint"] == "fp-123"
    assert tags["mlflow.source.git.commit"] == "abc123" and tags["recsys.preset"] == "demo"
    assert "test.retention.return_14d.auc" in tags["recsys.undefined_metrics"].split(",")

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert run.data.metrics["test.labels.like.gauc"] == pytest.approx(metrics["labels"]["like"]["gauc"])
    assert run.data.metrics["test.rows"] == 300
    assert "test.retention.return_14d.auc" not in run.data.metrics  # null: not logged as 0.5
    losses = client.get_metric_history(result.run_id, "train_loss")
    assert sorted((m.step, m.value) for m in losses) == [(1, pytest.approx(0.7)),
                                                         (2, pytest.approx(0.35))]
    assert len(client.get_metric_history(result.run_id, "valid.labels.like.auc")) == 2

    def listing(path=None):
        out = []
        for f in client.list_artifacts(result.run_id, path):
            out += listing(f.path) if f.is_dir else [f.path]
        return out

    assert set(listing()) >= {
        "config.toml", "run.json", "history.jsonl", "metrics.json", "predictions/test.parquet",
        "plots/roc.png", "plots/calibration.png", "plots/training_curves.png",
        "plots/cold_vs_warm.png", "checkpoints/model.pt"}
    # artifacts live next to the database, not in the working directory
    assert run.info.artifact_uri.startswith((tmp_path / "store" / "mlartifacts").as_uri())

    mv = client.get_model_version("ctr", "1")
    assert mv.run_id == result.run_id and mv.source.endswith("/checkpoints")
    meta = rundir.read_meta(run_dir)["tracking"]
    assert meta["synced"] is True and meta["run_id"] == result.run_id and meta["uri"] == store

    again = track_run(run_dir, store)  # idempotent: nothing logged twice
    assert again.already_synced and again.run_id == result.run_id
    assert len(_all_runs(client)) == 1
    assert len(client.search_model_versions("name = 'ctr'")) == 1


def test_unreachable_store_warns_once_then_sync_uploads(tmp_path, store, preds, capsys):
    down = f"http://127.0.0.1:{_closed_port()}"
    run_dir = make_run(tmp_path, "em3-1", preds, model_name="ctr")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = track_run(run_dir, down)
    tracking_warnings = [w for w in caught if issubclass(w.category, TrackingWarning)]
    assert len(tracking_warnings) == 1 and "recsys track sync" in str(tracking_warnings[0].message)
    assert not result.synced and "unreachable" in result.error
    # the training result is all there, and the run is marked pending
    assert json.loads((run_dir / "metrics.json").read_text())["labels"]["like"]["gauc"] > 0.5
    assert rundir.read_meta(run_dir)["tracking"]["synced"] is False

    assert _cli(["track", "sync", str(tmp_path), "--tracking-uri", store]) == 0  # finds it
    line = json.loads(capsys.readouterr().out.strip())
    assert line["synced"] and line["model_version"] == "1"
    client = MlflowClient(store)
    run = client.get_run(line["run_id"])
    assert run.data.metrics["test.labels.like.auc"] > 0.5
    assert rundir.read_meta(run_dir)["tracking"]["synced"] is True

    assert _cli(["track", "sync", str(run_dir), "--tracking-uri", store]) == 0
    assert json.loads(capsys.readouterr().out)["already_synced"] is True
    assert len(_all_runs(client)) == 1


def test_store_that_cannot_be_written_does_not_raise(tmp_path, preds, capsys):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the database directory should be")
    bad = f"sqlite:///{blocker / 'mlflow.db'}"
    run_dir = make_run(tmp_path, "r", preds, model_name="ctr")
    with pytest.warns(TrackingWarning):
        result = track_run(run_dir, bad)
    assert not result.synced and rundir.read_meta(run_dir)["tracking"]["error"]
    # the CLI reports the failure as a JSON line and exit status 1
    assert _cli(["track", "sync", str(run_dir), "--tracking-uri", bad]) == 1
    assert json.loads(capsys.readouterr().out)["synced"] is False


def test_sync_refuses_unfinished_and_non_run_dirs(tmp_path, store, preds):
    run_dir = make_run(tmp_path, "r", preds, status="running", checkpoints=False)
    with pytest.raises(UsageError, match="still 'running'"):
        _cli(["track", "sync", str(run_dir), "--tracking-uri", store])
    with pytest.raises(UsageError, match="not a run directory"):
        _cli(["track", "sync", str(tmp_path / "nope"), "--tracking-uri", store])
    assert _cli(["track", "sync", str(run_dir), "--tracking-uri", store,
                 "--allow-unfinished"]) == 0
    run = _all_runs(MlflowClient(store))[0]
    assert run.info.status == "KILLED"
    assert not MlflowClient(store).search_registered_models()  # no checkpoints, no version


def test_default_uri_is_sqlite_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert default_tracking_uri() == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"


def test_unreachable_tracking_store_loses_nothing_and_syncs_later(world, tmp_path):
    out = tmp_path / "run"
    # Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    cfg = load_train_config("id_only", [*TINY, f'data.dir="{world}"', "train.epochs=1",
                                        "tracking.enabled=true", 'tracking.uri="http://127.0.0.1:9"',
                                        'tracking.model_name="ranker"'])
    with pytest.warns(TrackingWarning):
        metrics = train(cfg, out, progress=False)
    assert json.loads((out / "metrics.json").read_text())["labels"] == metrics["labels"]
    assert json.loads((out / "run.json").read_text())["tracking"]["synced"] is False

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = run_recsys("track", "sync", str(out), "--tracking-uri", uri, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    tracking = json.loads((out / "run.json").read_text())["tracking"]
    assert tracking["synced"] is True
    logged = MlflowClient(uri).get_run(tracking["run_id"]).data.metrics
    assert logged["test.labels.click.auc"] == pytest.approx(metrics["labels"]["click"]["auc"])
    assert MlflowClient(uri).get_model_version("ranker", tracking["model_version"]).status == "READY"


def test_a_sync_after_a_failure_past_the_model_version_leaves_no_orphan_version(
        tmp_path, store, preds, monkeypatch):
    """The store fails after the model version is created (here: when the run is marked
    finished). The retry replaces the half-logged run; the version that run registered goes
    with it, so selection sees one candidate, not a second one whose run is deleted."""
    from recsys.runs.selection import select

    run_dir = make_run(tmp_path, "half", preds, model_name="ctr")
    with monkeypatch.context() as patch:
        def connection_lost(self, *args, **kwargs):
            raise ConnectionError("connection reset by peer")

        patch.setattr(MlflowClient, "set_terminated", connection_lost)
        with pytest.warns(TrackingWarning, match="connection reset by peer"):
            failed = track_run(run_dir, store)
    assert not failed.synced and failed.run_id
    client = MlflowClient(store)
    half = client.search_model_versions("name = 'ctr'")
    assert [v.run_id for v in half] == [failed.run_id]  # registered before the failure

    assert _cli(["track", "sync", str(run_dir), "--tracking-uri", store]) == 0
    synced = rundir.read_meta(run_dir)["tracking"]
    assert synced["synced"] is True and synced["run_id"] != failed.run_id
    assert client.get_run(failed.run_id).info.lifecycle_stage == "deleted"
    versions = client.search_model_versions("name = 'ctr'")
    assert [(str(v.version), v.run_id) for v in versions] == [
        (synced["model_version"], synced["run_id"])]
    report = select("ctr", tracking_uri=store, n_boot=50, dry_run=True)
    assert [(d["version"], d["decision"]) for d in report["decisions"]] == [
        (synced["model_version"], "initial")]
