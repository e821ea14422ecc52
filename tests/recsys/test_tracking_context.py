"""MLflow as users know it (issue 26, item 5), each fact read back through MlflowClient from a
real SQLite store: run start and end times, per-epoch metric timestamps, the data as dataset
inputs, the experiment kind, evaluation runs linked to what they evaluated. The selection
decision run's tags and artifact are checked in test_selection.py."""

from __future__ import annotations

import json
import warnings

from mlflow import MlflowClient

from data.dataset import dataset_fingerprint, load_dataset
from recsys.config import load_train_config
from recsys.evaluation.evaluate import evaluate
from recsys.runs import rundir
from recsys.runs.selection import select
from recsys.runs.selection_record import SELECTION_EXPERIMENT
from recsys.runs.tracking import ensure_experiment, track_run
from recsys.runs.tracking_context import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, to_ms
from recsys.training.train import train
from tests.recsys.run_fixtures import make_run
from tests.recsys.train_fixtures import TINY


def _contexts(run) -> dict[str, object]:
    """{context: dataset} of a run's dataset inputs."""
    out = {}
    for di in run.inputs.dataset_inputs:
        tags = {t.key: t.value for t in di.tags}
        out[tags["mlflow.data.context"]] = di.dataset
    return out


def _set_times(run_dir, created, finished, epoch_times):
    """Gives a constructed run the times a training run records."""
    rundir.update_meta(run_dir, created_at=created, finished_at=finished)
    records = rundir.read_history(run_dir)
    (run_dir / rundir.HISTORY_FILE).write_text("".join(
        json.dumps({**r, "time": t}) + "\n" for r, t in zip(records, epoch_times, strict=True)))


def test_start_end_and_epoch_times_are_the_run_directorys(tmp_path, store, preds):
    run_dir = make_run(tmp_path, "timed", preds, model_name="ctr", epochs=3)
    epochs = ["2026-03-01T10:02:00.250+00:00", "2026-03-01T10:04:30.500+00:00",
              "2026-03-01T10:07:10.750+00:00"]
    _set_times(run_dir, "2026-03-01T10:00:00+00:00", "2026-03-01T10:08:00+00:00", epochs)
    result = track_run(run_dir, store)
    client = MlflowClient(store)
    info = client.get_run(result.run_id).info
    meta = rundir.read_meta(run_dir)
    assert info.start_time == to_ms(meta["created_at"]) == 1772359200000
    assert info.end_time == to_ms(meta["finished_at"]) == 1772359200000 + 8 * 60_000

    for key in ("train_loss", "valid.labels.like.auc"):
        history = sorted(client.get_metric_history(result.run_id, key), key=lambda m: m.step)
        assert [m.step for m in history] == [1, 2, 3]
        stamps = [m.timestamp for m in history]
        assert stamps == [to_ms(t) for t in epochs]  # one per epoch: distinct and ordered
        assert info.start_time < stamps[0] < stamps[1] < stamps[2] < info.end_time
    final = client.get_metric_history(result.run_id, "test.labels.like.gauc")
    assert [m.timestamp for m in final] == [info.end_time]
    assert "time" not in client.get_run(result.run_id).data.metrics


def test_a_run_that_never_finished_ends_at_its_last_epoch(tmp_path, store, preds):
    run_dir = make_run(tmp_path, "killed", preds, epochs=2, status="running")
    _set_times(run_dir, "2026-03-01T10:00:00+00:00", None,
               ["2026-03-01T10:01:00.000+00:00", "2026-03-01T10:02:00.000+00:00"])
    info = MlflowClient(store).get_run(track_run(run_dir, store).run_id).info
    assert info.status == "KILLED"
    assert info.end_time == to_ms("2026-03-01T10:02:00+00:00")


def test_data_is_logged_as_dataset_inputs_with_the_fingerprint(tmp_path, store, preds, world):
    fingerprint = dataset_fingerprint(world)
    run_dir = make_run(tmp_path, "with-data", preds, model_name="ctr")
    rundir.update_meta(run_dir, dataset={"dir": str(world), "fingerprint": fingerprint})
    run = MlflowClient(store).get_run(track_run(run_dir, store).run_id)
    inputs = _contexts(run)
    assert set(inputs) == {"training", "evaluation"}
    interactions = load_dataset(world).interactions
    training, evaluation = inputs["training"], inputs["evaluation"]
    assert training.digest == evaluation.digest == fingerprint
    assert json.loads(training.source) == {"uri": str(world)} == json.loads(evaluation.source)
    assert training.source_type == "local"
    assert json.loads(training.profile)["num_rows"] == interactions.height
    columns = {c["name"] for c in json.loads(training.schema)["mlflow_colspec"]}
    assert {"user_id", "item_id", "timestamp"} <= columns  # the table as the dataset holds it
    assert evaluation.name == f"{training.name}.test"
    assert json.loads(evaluation.profile)["num_rows"] == preds.height
    assert {"row_id", "like", "pred_like"} <= {
        c["name"] for c in json.loads(evaluation.schema)["mlflow_colspec"]}


def test_a_dataset_that_is_gone_keeps_its_digest_and_source(tmp_path, store, preds):
    run_dir = make_run(tmp_path, "gone", preds)  # dataset_dir "/data/synth" does not exist
    inputs = _contexts(MlflowClient(store).get_run(track_run(run_dir, store).run_id))
    gone = inputs["training"]
    assert gone.digest == "fp-123" and json.loads(gone.source) == {"uri": "/data/synth"}
    assert gone.name == "synth" and not gone.schema  # nothing read, nothing made up
    assert inputs["evaluation"].digest == "fp-123"  # the predictions are in the run dir


def test_experiments_are_tagged_as_model_development(tmp_path, store, preds):
    client = MlflowClient(store)
    result = track_run(make_run(tmp_path, "a", preds, model_name="ctr"), store)
    exp = client.get_experiment(client.get_run(result.run_id).info.experiment_id)
    assert exp.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND == "custom_model_development"
    # an experiment made before the tag gets it; a kind someone chose is kept
    old = client.create_experiment("older")
    assert EXPERIMENT_KIND_TAG not in client.get_experiment(old).tags
    ensure_experiment(client, "older", store)
    assert client.get_experiment(old).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    mine = client.create_experiment("chosen", tags={EXPERIMENT_KIND_TAG: "forecasting"})
    ensure_experiment(client, "chosen", store)
    assert client.get_experiment(mine).tags[EXPERIMENT_KIND_TAG] == "forecasting"
    # the selection decisions' experiment too
    track_run(make_run(tmp_path, "b", preds, model_name="ctr"), store)
    select("ctr", tracking_uri=store, n_boot=50)
    sel = client.get_experiment_by_name(SELECTION_EXPERIMENT)
    assert sel.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND


def test_a_trained_and_evaluated_run_reads_as_users_know_it(world, tmp_path, store):
    """id_only trained for real with tracking on, then `recsys evaluate`d with tracking on:
    the training run's real times and per-epoch timestamps (train.py's epoch records), its
    data inputs, and the evaluation run nested under it, tagged with its run and version."""
    cfg = load_train_config("id_only", [*TINY, f'data.dir="{world}"', "train.epochs=3",
                                        "train.patience=5", "tracking.enabled=true",
                                        f'tracking.uri="{store}"',
                                        'tracking.model_name="ctr-ui"'])
    run_dir = tmp_path / "id_only"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # whether the version is servable is not this test's
        train(cfg, run_dir, preset="id_only", progress=False)
    meta = rundir.read_meta(run_dir)
    assert meta["tracking"]["synced"], meta["tracking"]
    client = MlflowClient(store)
    trained = client.get_run(meta["tracking"]["run_id"])
    assert trained.info.start_time == to_ms(meta["created_at"])
    assert trained.info.end_time == to_ms(meta["finished_at"])
    assert trained.info.end_time - trained.info.start_time >= 1000  # not the ~0.5 s of a copy
    epochs = [to_ms(r["time"]) for r in rundir.read_history(run_dir)]
    history = sorted(client.get_metric_history(trained.info.run_id, "train_loss"),
                     key=lambda m: m.step)
    assert [m.step for m in history] == [1, 2, 3]
    assert [m.timestamp for m in history] == epochs
    assert len(set(epochs)) == 3 and epochs == sorted(epochs)
    assert trained.info.start_time <= epochs[0] and epochs[-1] <= trained.info.end_time
    inputs = _contexts(trained)
    assert inputs["training"].digest == meta["dataset"]["fingerprint"] == dataset_fingerprint(world)
    assert json.loads(inputs["training"].profile)["num_rows"] == load_dataset(world).interactions.height
    assert inputs["evaluation"].name.endswith(".test")

    out = tmp_path / "eval-test"
    evaluate(run_dir, world, split="test", out=out, progress=False)
    emeta = rundir.read_meta(out)
    assert emeta["tracking"]["synced"], emeta["tracking"]
    assert emeta["evaluated"]["run_dir"] == str(run_dir.resolve())
    evaluated = client.get_run(emeta["tracking"]["run_id"])
    tags = evaluated.data.tags
    assert tags["recsys.kind"] == "evaluate"
    assert tags["recsys.evaluated_run_id"] == trained.info.run_id
    assert tags["mlflow.parentRunId"] == trained.info.run_id  # nested under it in the UI
    assert tags["recsys.evaluated_model_version"] == f"ctr-ui/{meta['tracking']['model_version']}"
    assert client.get_model_version("ctr-ui", meta["tracking"]["model_version"]).run_id == \
        trained.info.run_id
    assert evaluated.info.experiment_id == trained.info.experiment_id
    assert evaluated.info.start_time == to_ms(emeta["created_at"])
    assert evaluated.info.end_time == to_ms(emeta["finished_at"]) > evaluated.info.start_time
    einputs = _contexts(evaluated)
    assert set(einputs) == {"evaluation"}
    assert einputs["evaluation"].digest == dataset_fingerprint(world)
    assert json.loads(einputs["evaluation"].profile)["num_rows"] == \
        json.loads((out / "metrics.json").read_text())["rows"]


def test_an_evaluation_of_a_run_tracked_later_is_linked_at_sync(tmp_path, store, preds):
    """The training run was synced after its evaluation ran: syncing the evaluation reads the
    training run's run.json as it is now."""
    train_dir = make_run(tmp_path, "late", preds, model_name="ctr")
    eval_dir = make_run(tmp_path, "late-eval", preds, checkpoints=False)
    rundir.update_meta(eval_dir, kind="evaluate", evaluated={
        "run_dir": str(train_dir.resolve()), "model_name": "ctr",
        "tracking": {"uri": None, "run_id": None, "synced": False, "model_version": None}})
    trained = track_run(train_dir, store)
    linked = MlflowClient(store).get_run(track_run(eval_dir, store).run_id)
    assert linked.data.tags["recsys.evaluated_run_id"] == trained.run_id
    assert linked.data.tags["recsys.evaluated_model_version"] == f"ctr/{trained.model_version}"
    assert set(_contexts(linked)) == {"evaluation"}
