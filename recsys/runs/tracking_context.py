"""What makes a mirrored run read in MLflow as users know it (docs/evaluation.md §3): its real
start and end times, per-epoch metric timestamps, the data it trained and was evaluated on as
dataset inputs, and, for an evaluation run, the training run and model version it evaluated.

``recsys.runs.tracking`` calls these while it mirrors a run directory; everything here is read from
the run directory (``run.json``, ``history.jsonl``, ``predictions/``) and the dataset directory
it names, never invented: a time that was not recorded is left to MLflow's "now".
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
from pathlib import Path
from typing import Any

import polars as pl
from mlflow.entities import Dataset, DatasetInput, InputTag
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT, MLFLOW_PARENT_RUN_ID

from recsys.runs import rundir

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
TRAINING, VALIDATION, EVALUATION = "training", "validation", "evaluation"


def to_ms(value: Any) -> int | None:
    """Unix milliseconds of an ISO-8601 time (``run.json``, ``history.jsonl``); a number is
    taken as milliseconds already. None when absent or unreadable."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    if not isinstance(value, str) or not value:
        return None
    try:
        t = _dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    if t.tzinfo is None:  # recsys writes UTC; a naive time is read as UTC too
        t = t.replace(tzinfo=_dt.UTC)
    return int(round(t.timestamp() * 1000))


def run_times(run: rundir.Run) -> tuple[int | None, int | None]:
    """(start, end) in unix ms: ``created_at`` and ``finished_at`` of ``run.json``, the end no
    earlier than the last epoch's end (runs from before milliseconds recorded their times to
    the second). A run that never finished (crashed, synced with ``--allow-unfinished``) ends
    at its last epoch; None where nothing was recorded."""
    start = to_ms(run.meta.get("created_at"))
    last_epoch = max((t for t in map(epoch_time, run.history) if t is not None), default=None)
    ends = [t for t in (to_ms(run.meta.get("finished_at")), last_epoch) if t is not None]
    return start, max(ends) if ends else None


def epoch_time(record: dict[str, Any]) -> int | None:
    """The end of an epoch (``time`` of its ``history.jsonl`` record) in unix ms."""
    return to_ms(record.get("time"))


# --- dataset inputs ---------------------------------------------------------------------------

def _frame_dataset(frame: pl.LazyFrame, *, name: str, digest: str, source: str | None,
                   targets: str | None = None, predictions: str | None = None) -> Dataset:
    """An MLflow dataset entity of ``frame`` built with ``mlflow.data.from_polars``: schema from
    the columns and profile from the row count, without loading the rows (only the schema and
    the count are collected)."""
    import mlflow.data
    from mlflow.data.sources import LocalArtifactDatasetSource

    columns = frame.head(0).collect()
    rows = frame.select(pl.len()).collect().item()
    ds = mlflow.data.from_polars(
        columns, source=LocalArtifactDatasetSource(source) if source else None, name=name,
        digest=digest, targets=targets if targets in columns.columns else None,
        predictions=predictions if predictions in columns.columns else None)
    entity = ds.to_dict()
    entity["profile"] = json.dumps({"num_rows": rows, "num_elements": rows * columns.width})
    return Dataset(**entity)


def _scan(path: Path) -> pl.LazyFrame:
    return pl.scan_csv(path, infer_schema_length=10_000) if path.suffix == ".csv" \
        else pl.scan_parquet(path)


def _dataset_dir(run: rundir.Run) -> tuple[str | None, str | None, str]:
    """(dataset dir, fingerprint, dataset name) of the data a run read."""
    ds = run.meta.get("dataset") or {}
    directory, fingerprint = ds.get("dir"), ds.get("fingerprint")
    name = Path(directory).name if directory else "dataset"
    if directory:
        from data.spec import read_spec

        with contextlib.suppress(Exception):  # gone or changed: the directory's name stands in
            name = read_spec(Path(directory)).name or name
    return directory, fingerprint, name


def _training_input(directory: str | None, fingerprint: str, name: str,
                    labels: list[str]) -> Dataset:
    """The dataset a training run read (its interactions table; the run's split of it is in
    the ``data.*`` params). When the directory is gone or its fingerprint is no longer the one
    the run recorded, the input keeps the name, the digest and the source, with no schema."""
    if directory:
        from data.dataset import dataset_fingerprint
        from data.spec import read_spec
        from data.tables import resolve_table_path

        try:
            root = Path(directory)
            if dataset_fingerprint(root) == fingerprint:
                spec = read_spec(root)
                table = resolve_table_path(root.resolve(), spec.interactions.file,
                                           "interactions.file")
                return _frame_dataset(_scan(table), name=name, digest=fingerprint,
                                      source=directory, targets=labels[0] if labels else None)
        except Exception:  # noqa: BLE001 - an unreadable dataset must not keep the run out
            pass
    return Dataset(name=name, digest=fingerprint, source_type="local" if directory else "code",
                   source=json.dumps({"uri": directory} if directory else {}))


def dataset_inputs(run: rundir.Run) -> list[DatasetInput]:
    """The run's data as MLflow dataset inputs, each with the dataset fingerprint as digest and
    the dataset directory as source: a training run's dataset (context ``training``), and the
    rows each ``predictions/<split>.parquet`` was scored on (``evaluation``; ``validation`` for
    the valid split), named ``<dataset>.<split>``. Empty for a run without a fingerprint."""
    directory, fingerprint, name = _dataset_dir(run)
    if not fingerprint:
        return []
    labels = run.labels
    primary = labels[0] if labels else None
    out = []
    if run.meta.get("kind", "train") == "train":
        out.append((_training_input(directory, fingerprint, name, labels), TRAINING))
    for split, path in sorted(run.predictions.items()):
        ds = _frame_dataset(pl.scan_parquet(path), name=f"{name}.{split}", digest=fingerprint,
                            source=directory, targets=primary,
                            predictions=f"pred_{primary}" if primary else None)
        out.append((ds, VALIDATION if split == "valid" else EVALUATION))
    return [DatasetInput(ds, tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])
            for ds, context in out]


# --- evaluation runs --------------------------------------------------------------------------

def evaluated(run: rundir.Run, uri: str) -> dict[str, str]:
    """For an evaluation run: what it evaluated, as it stands in the store at ``uri``:
    ``run_dir``, and when the training run is synced there ``run_id`` and ``model_version``
    (``name/version``). The training run's own ``run.json`` is read when it is still there (a
    training run synced after its evaluation is found), else the copy ``recsys evaluate``
    wrote. Empty for other runs."""
    link = run.meta.get("evaluated") or {}
    if not link:
        return {}
    model_name, tracking = link.get("model_name"), link.get("tracking") or {}
    if link.get("run_dir"):
        try:
            meta = rundir.read_meta(link["run_dir"])
            model_name, tracking = meta.get("model_name"), meta.get("tracking") or {}
        except (OSError, ValueError):
            pass  # the training run directory is gone: the copy stands
    out = {"run_dir": link.get("run_dir")}
    if tracking.get("synced") and tracking.get("uri") == uri and tracking.get("run_id"):
        out["run_id"] = tracking["run_id"]
        if model_name and tracking.get("model_version"):
            out["model_version"] = f"{model_name}/{tracking['model_version']}"
    return {k: str(v) for k, v in out.items() if v}


def evaluation_tags(link: dict[str, str]) -> dict[str, str]:
    """The tags linking an evaluation run to what it evaluated: the training run (also as the
    MLflow parent, so the UI nests the evaluation under it) and the model version."""
    tags = {"recsys.evaluated_run_dir": link.get("run_dir"),
            "recsys.evaluated_run_id": link.get("run_id"),
            MLFLOW_PARENT_RUN_ID: link.get("run_id"),
            "recsys.evaluated_model_version": link.get("model_version")}
    return {k: v for k, v in tags.items() if v}


def evaluated_experiment(client: Any, run: rundir.Run, uri: str) -> str | None:
    """The experiment of the training run an evaluation run evaluated (so the evaluation lands
    beside it), or None when it is not in this store."""
    run_id = evaluated(run, uri).get("run_id")
    if not run_id:
        return None
    try:
        training = client.get_run(run_id)
    except Exception:  # noqa: BLE001 - deleted from the store: the default experiment
        return None
    return training.info.experiment_id if training.info.lifecycle_stage == "active" else None
