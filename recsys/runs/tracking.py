"""Mirrors a run directory into MLflow: params, per-epoch and final metrics, tags, artifacts and
the model registered as a version of a named registered model.

The run directory is the record; MLflow is a copy made after the fact. ``track_run`` never
raises into training: when the store is unreachable or refuses writes it warns once, leaves
``run.json`` with ``tracking.synced = false`` and ``recsys track sync RUN_DIR`` uploads later.

Naming in MLflow (see docs/evaluation.md):
- params: the resolved config flattened with dots (``train.lr``);
- per-epoch metrics from ``history.jsonl`` at ``step = epoch``: ``train_loss``,
  ``samples_per_s``, ``valid.labels.like.auc`` ...;
- final metrics of ``metrics.json`` / ``metrics_<split>.json`` as ``<split>.<path>``
  (``test.labels.like.gauc``); undefined (null) metrics are not logged, their paths are in the
  ``recsys.undefined_metrics`` tag and the reasons in ``metrics.json``;
- artifacts: ``config.toml``, ``run.json``, ``history.jsonl``, ``metrics*.json``,
  ``predictions/``, ``plots/``, ``checkpoints/`` and ``model/``, the run's MLflow Model
  (``recsys.serving``): the registered model version's source.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.utils.validation import (
    MAX_METRICS_PER_BATCH,
    MAX_PARAM_VAL_LENGTH,
    MAX_PARAMS_TAGS_PER_BATCH,
    MAX_TAG_VAL_LENGTH,
)

from recsys.config_io import flatten
from recsys.evaluation.plots import make_plots
from recsys.runs import rundir, tracking_context
from recsys.runs.tracking_context import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG

DEFAULT_DB = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
DEFAULT_EXPERIMENT = "recsys"
_MLFLOW_STATUS = {"finished": "FINISHED", "failed": "FAILED", "running": "KILLED"}


class TrackingWarning(UserWarning):
    """The tracking store could not be written; the run directory still holds everything."""


class TrackingUnavailable(RuntimeError):
    """The tracking store cannot be reached (raised by the preflight check)."""


@dataclass
class TrackResult:
    """Outcome of :func:`track_run` (also stored in ``run.json``'s ``tracking``)."""

    synced: bool
    tracking_uri: str
    run_id: str | None = None
    model_version: str | None = None
    error: str | None = None
    already_synced: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_tracking_uri(cwd: str | Path | None = None) -> str:
    """The embedded default: a SQLite store ``mlflow.db`` in the working directory."""
    return f"sqlite:///{Path(cwd or os.getcwd()).resolve() / DEFAULT_DB}"


def resolve_tracking_uri(uri: str | None = None) -> str:
    """``uri``, else ``$MLFLOW_TRACKING_URI``, else :func:`default_tracking_uri`."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fails fast on an unreachable server: MLflow's HTTP client retries with backoff for
    minutes, which would stall the end of training. Any HTTP answer counts as reachable."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).close()
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError) as exc:
        raise TrackingUnavailable(f"tracking server {uri} is unreachable: {exc}") from exc


def client_for(uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def ensure_experiment(client: MlflowClient, name: str, uri: str) -> str:
    """The id of experiment ``name``, created when missing, tagged as model development
    (``mlflow.experimentKind`` = ``custom_model_development``; a kind already set is kept).

    For a SQLite store the artifacts go next to the database (``<db dir>/mlartifacts``):
    MLflow's own default is ``./mlruns`` relative to whatever the working directory is.
    """
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        if EXPERIMENT_KIND_TAG not in exp.tags:  # made before the tag existed
            client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return exp.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        location = (Path(uri[len("sqlite:///"):]).parent / ARTIFACTS_DIR).resolve().as_uri()
    return client.create_experiment(name, artifact_location=location,
                                    tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})


def _key(k: str) -> str:
    return re.sub(r"[^\w\-. /]", "_", k)[:250]  # MLflow's allowed key characters and length


def _numeric(flat: dict[str, Any]) -> dict[str, float]:
    return {_key(k): float(v) for k, v in flat.items()
            if isinstance(v, int | float) and not isinstance(v, bool)}


def _chunks(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _metrics(run: rundir.Run) -> tuple[list[Metric], list[str]]:
    """(MLflow metrics of the history and the final metrics files, null metric paths).

    An epoch's metrics carry the epoch's end (its record's ``time``), the final metrics the
    run's end; a time the run did not record (runs from before ``time``) is now."""
    now = int(time.time() * 1000)
    end = tracking_context.run_times(run)[1] or now
    seen: set[tuple[str, int]] = set()
    metrics = []
    for record in run.history:
        step = int(record["epoch"])
        stamp = tracking_context.epoch_time(record) or now
        flat = flatten({k: v for k, v in record.items()
                        if k not in ("epoch", "step", "notes", "time")})
        for k, v in _numeric(flat).items():
            seen.add((k, step))
            metrics.append(Metric(k, v, stamp, step))
    last = max((int(r["epoch"]) for r in run.history), default=0)
    undefined = []
    files = ([run.metrics] if run.metrics else []) + list(run.split_metrics.values())
    for m in files:
        split = m.get("split", "test")
        flat = flatten({k: v for k, v in m.items() if k not in ("split", "notes")}, f"{split}.")
        undefined += [k for k, v in flat.items() if v is None]
        for k, v in _numeric(flat).items():
            if (k, last) not in seen:  # metrics_valid.json may repeat the last epoch's values
                seen.add((k, last))
                metrics.append(Metric(k, v, end, last))
    return metrics, undefined


def _tags(run: rundir.Run, undefined: list[str]) -> dict[str, str]:
    meta = run.meta
    commit = meta.get("git_commit")
    tags = {
        "mlflow.runName": meta.get("name") or run.path.name,
        "recsys.kind": meta.get("kind"), "recsys.preset": meta.get("preset"),
        "recsys.model_name": meta.get("model_name"),
        "recsys.labels": ",".join(run.labels),
        "recsys.dataset_dir": (meta.get("dataset") or {}).get("dir"),
        "recsys.dataset_fingerprint": (meta.get("dataset") or {}).get("fingerprint"),
        "recsys.git_commit": commit, "mlflow.source.git.commit": commit,
        "recsys.run_dir": str(run.path.resolve()), "recsys.status": meta.get("status"),
        "recsys.created_at": meta.get("created_at"),
        "recsys.split": (run.metrics or {}).get("split"),
        "recsys.undefined_metrics": ",".join(undefined) or None,
    }
    return {k: str(v)[:MAX_TAG_VAL_LENGTH] for k, v in tags.items() if v not in (None, "")}


def _log_everything(client: MlflowClient, run: rundir.Run, experiment_id: str,
                    model_name: str | None, uri: str) -> tuple[str, str | None]:
    """Creates the MLflow run, logs the run directory into it; returns (run_id, version)."""
    metrics, undefined = _metrics(run)
    start, end = tracking_context.run_times(run)
    link = tracking_context.evaluation_tags(tracking_context.evaluated(run, uri))
    mlrun = client.create_run(experiment_id, start_time=start,
                              tags={**_tags(run, undefined), **link})
    run_id = mlrun.info.run_id
    # remember the id at once: a later sync deletes this run if we die half-way through
    rundir.update_meta(run.path, tracking={"uri": uri, "run_id": run_id, "synced": False})
    try:
        config = flatten(tomllib.loads(run.config_text)) if run.config_text else {}
    except tomllib.TOMLDecodeError:
        config = {}
    params = [Param(_key(k), str(v)[:MAX_PARAM_VAL_LENGTH]) for k, v in config.items()]
    for chunk in _chunks(params, MAX_PARAMS_TAGS_PER_BATCH):
        client.log_batch(run_id, params=chunk)
    for chunk in _chunks(metrics, MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=chunk)
    client.log_inputs(run_id, datasets=tracking_context.dataset_inputs(run))

    try:
        make_plots(run.path)
    except Exception as exc:  # noqa: BLE001 - a plot must not keep the results out of MLflow
        client.set_tag(run_id, "recsys.plots_error", f"{type(exc).__name__}: {exc}"[:500])
    for name in (rundir.CONFIG_FILE, rundir.HISTORY_FILE, rundir.METRICS_FILE):
        if (run.path / name).is_file():
            client.log_artifact(run_id, str(run.path / name))
    for path in sorted(run.path.glob("metrics_*.json")):
        client.log_artifact(run_id, str(path))
    for sub in (rundir.PREDICTIONS_DIR, rundir.PLOTS_DIR, rundir.CHECKPOINTS_DIR):
        if (run.path / sub).is_dir():
            client.log_artifacts(run_id, str(run.path / sub), sub)

    version = None
    if model_name and run.checkpoints is not None:
        source, servable = _model_source(client, run, run_id, mlrun.info.artifact_uri)
        if not client.search_registered_models(filter_string=f"name = '{model_name}'"):
            client.create_registered_model(model_name, description="recsys ranking model")
        mv = client.create_model_version(
            model_name, source=source, run_id=run_id,
            tags={"recsys.run_dir": str(run.path.resolve()),
                  "recsys.servable": str(servable).lower()})
        version = str(mv.version)
        client.set_tag(run_id, "recsys.model_version", f"{model_name}/{version}")

    with tempfile.TemporaryDirectory() as tmp:  # run.json as it reads after this sync
        meta = {**run.meta, "tracking": {"uri": uri, "run_id": run_id, "synced": True,
                                         "model_version": version, "error": None}}
        client.log_artifact(run_id, str(rundir.atomic_write_json(Path(tmp, "run.json"), meta)))
    client.set_terminated(run_id, _MLFLOW_STATUS.get(run.meta.get("status"), "FINISHED"),
                          end_time=end)
    return run_id, version


def _model_source(client: MlflowClient, run: rundir.Run, run_id: str,
                  artifact_uri: str) -> tuple[str, bool]:
    """(the model version's source, whether it is servable).

    A training run is packaged as an MLflow Model (``RUN/model``, ``recsys.serving``), logged
    as the ``model`` artifact and registered, so ``models:/NAME@champion`` loads and predicts.
    A run that cannot be packaged (one with no data state, whose dataset is gone or changed)
    is still registered, with its checkpoints as source and the reason in the run's
    ``recsys.servable_error`` tag: a failure here must not keep the results out of MLflow.
    """
    from recsys.runs.run_artifacts import DATA_STATE
    from recsys.serving.mlflow_model import MODEL_DIR, ensure_mlflow_model

    try:
        model_dir = ensure_mlflow_model(run.path)
    except Exception as exc:  # noqa: BLE001 - the run stays tracked, marked as not servable
        error = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        client.set_tag(run_id, "recsys.servable_error", error)
        if (run.path / DATA_STATE).is_file():  # a training run that should have been servable
            warnings.warn(f"{run.path} is registered without a servable model ({error})",
                          TrackingWarning, stacklevel=3)
        return f"{artifact_uri}/{rundir.CHECKPOINTS_DIR}", False
    client.log_artifacts(run_id, str(model_dir), MODEL_DIR)
    return f"{artifact_uri}/{MODEL_DIR}", True


def _discard_attempt(client: MlflowClient, run_id: str) -> None:
    """Removes what an earlier, failed attempt to track a run left in the store: the model
    versions registered from its MLflow run (an attempt can fail after registering one; left
    there, the version would be a candidate for ``recsys select`` whose run is deleted) and
    then the run itself."""
    for mv in client.search_model_versions(f"run_id = '{run_id}'"):
        client.delete_model_version(mv.name, str(mv.version))
    with contextlib.suppress(Exception):  # the run may never have reached the store
        client.delete_run(run_id)


def track_run(run_dir: str | Path, tracking_uri: str | None = None,
              model_name: str | None = None, experiment: str | None = None) -> TrackResult:
    """Logs a run directory to MLflow and registers its MLflow Model as a model version.

    ``model_name`` defaults to ``run.json``'s ``model_name`` (no registration when neither is
    set or the run has no checkpoints); ``experiment`` defaults to the model name, else
    ``recsys``. Idempotent: a run already synced to this URI is not logged again. Never raises
    for tracking failures: warns once (``TrackingWarning``) and returns ``synced=False``.
    """
    uri = resolve_tracking_uri(tracking_uri)
    run = rundir.read_run(run_dir)
    state = run.meta.get("tracking") or {}
    if state.get("synced") and state.get("run_id") and state.get("uri") == uri:
        return TrackResult(synced=True, tracking_uri=uri, run_id=state["run_id"],
                           model_version=state.get("model_version"), already_synced=True)
    model_name = model_name or run.meta.get("model_name")
    try:
        check_reachable(uri)
        client = client_for(uri)
        if state.get("run_id") and state.get("uri") == uri:
            # a half-logged run from an earlier attempt: replace it, do not duplicate
            _discard_attempt(client, state["run_id"])
        exp_id = (None if experiment or model_name  # an evaluation joins what it evaluated
                  else tracking_context.evaluated_experiment(client, run, uri)) \
            or ensure_experiment(client, experiment or model_name or DEFAULT_EXPERIMENT, uri)
        run_id, version = _log_everything(client, run, exp_id, model_name, uri)
    except Exception as exc:  # noqa: BLE001 - tracking must never kill a finished training
        error = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        warnings.warn(f"MLflow tracking to {uri} failed ({error}); everything is in "
                      f"{run.path}; upload later with: recsys track sync {run.path}",
                      TrackingWarning, stacklevel=2)
        current = (rundir.read_meta(run.path).get("tracking") or {})
        failed_id = current.get("run_id") if current.get("uri") == uri else None
        if failed_id:
            # best effort: a half-logged run should not look like it is still running
            with contextlib.suppress(Exception):
                check_reachable(uri, timeout=2.0)
                client_for(uri).set_terminated(failed_id, "FAILED")
        with contextlib.suppress(OSError):  # a read-only run dir must not fail training either
            rundir.update_meta(run.path, tracking={"uri": uri, "run_id": failed_id,
                                                   "synced": False, "error": error})
        return TrackResult(synced=False, tracking_uri=uri, run_id=failed_id, error=error)
    rundir.update_meta(run.path, tracking={"uri": uri, "run_id": run_id, "synced": True,
                                           "model_version": version, "error": None,
                                           "synced_at": rundir.utc_now()})
    return TrackResult(synced=True, tracking_uri=uri, run_id=run_id, model_version=version)


def pending_runs(root: str | Path) -> list[Path]:
    """Run directories under ``root`` (recursively) whose ``run.json`` says not synced."""
    out = []
    for meta in sorted(Path(root).rglob(rundir.META_FILE)):
        try:
            state = json.loads(meta.read_text(encoding="utf-8")).get("tracking") or {}
        except (OSError, json.JSONDecodeError):
            continue
        if not state.get("synced"):
            out.append(meta.parent)
    return out
