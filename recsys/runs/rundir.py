"""The run directory: everything a training or evaluation run produces, written there first.

MLflow is a mirror of this directory, never the only copy (``recsys track sync`` uploads a run
later when the tracking store was unreachable). Layout::

    RUN_DIR/
      config.toml               resolved config (the source of truth the run used)
      run.json                  meta: kind, preset, model name, labels, dataset, git commit,
                                created_at / finished_at (ISO-8601 UTC, ms), status,
                                tracking {uri, run_id, synced, ...},
                                dense_tower_precision (training: what this machine computed in)
      history.jsonl             one JSON object per epoch: epoch, step, train_loss, samples_per_s,
                                valid {metrics.json-shaped dict}, time (ISO-8601 UTC, ms: the
                                epoch's end, the MLflow timestamp of its metrics)
      metrics.json              final metrics (docs/design.md §5.3); other splits in metrics_<split>.json
      predictions/<split>.parquet   row keys, truths and probabilities (see PREDICTION_KEYS)
      checkpoints/              written by training; opaque, logged as the model artifact
      plots/                    PNGs made by ``recsys.evaluation.plots`` when the run is tracked

Every file is written atomically (temp file in the same directory, then ``rename``) so that a
crash never leaves a half-written JSON or Parquet file that a later sync would upload.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

CONFIG_FILE = "config.toml"
META_FILE = "run.json"
HISTORY_FILE = "history.jsonl"
METRICS_FILE = "metrics.json"
PREDICTIONS_DIR = "predictions"
CHECKPOINTS_DIR = "checkpoints"
PLOTS_DIR = "plots"

# Columns every predictions file has; per label ``<label>`` (0/1) and ``pred_<label>`` follow,
# then the optional retention columns (nullable truths: null = censored).
PREDICTION_KEYS = ("row_id", "user_id", "item_id", "user_key", "cold_item", "cold_user")
RETENTION_TRUTHS = ("return_7d", "return_14d")
RETENTION_COUNTS = ("lt7", "lt14")
STATUSES = ("running", "finished", "failed")


def utc_now(timespec: str = "seconds") -> str:
    """The current UTC time as an ISO-8601 string, to the second (``timespec`` as in
    ``datetime.isoformat``: ``"milliseconds"`` for a run's start and end and an epoch's end,
    which MLflow shows as the run's duration and its metrics' times)."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec=timespec)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Writes ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    path = Path(path)
    _atomic_write_bytes(path, text.encode("utf-8"))
    return path


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Writes ``obj`` as indented JSON atomically. NaN/inf are refused (not valid JSON): an
    undefined metric is ``None`` with a reason, never NaN."""
    return atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def git_commit(cwd: str | Path | None = None) -> str | None:
    """The commit checked out at ``cwd`` (with ``-dirty`` when there are local changes), or
    None outside a git work tree / without commits."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=cwd, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if dirty else sha


def init_run(run_dir: str | Path, *, config_toml: str, kind: str = "train",
             preset: str | None = None, model_name: str | None = None,
             labels: list[str] | tuple[str, ...] = (), dataset_dir: str | Path | None = None,
             dataset_fingerprint: str | None = None, commit: str | None = None) -> Path:
    """Creates ``run_dir`` with ``config.toml`` and ``run.json`` (status ``running``).

    ``labels`` are the label heads, primary first; selection's default metric uses the first.
    ``commit`` defaults to :func:`git_commit` of the current directory.
    """
    run_dir = Path(run_dir)
    if (run_dir / META_FILE).exists():
        raise FileExistsError(f"{run_dir} already holds a run ({META_FILE} exists)")
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / CONFIG_FILE, config_toml)
    meta = {
        "schema": 1, "kind": kind, "name": run_dir.name, "preset": preset,
        "model_name": model_name, "labels": list(labels),
        "dataset": {"dir": None if dataset_dir is None else str(dataset_dir),
                    "fingerprint": dataset_fingerprint},
        "git_commit": commit if commit is not None else git_commit(),
        "created_at": utc_now("milliseconds"), "finished_at": None, "status": "running",
        "tracking": {"uri": None, "run_id": None, "synced": False, "model_version": None,
                     "error": None},
    }
    atomic_write_json(run_dir / META_FILE, meta)
    return run_dir


def read_meta(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory ({META_FILE} missing)")
    return json.loads(path.read_text(encoding="utf-8"))


def update_meta(run_dir: str | Path, **changes: Any) -> dict[str, Any]:
    """Read-modify-write of ``run.json``; a dict value is merged one level deep (so
    ``tracking={"synced": True}`` keeps the other tracking keys). Returns the new meta."""
    meta = read_meta(run_dir)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(meta.get(key), dict):
            meta[key] = {**meta[key], **value}
        else:
            meta[key] = value
    atomic_write_json(Path(run_dir) / META_FILE, meta)
    return meta


def finish_run(run_dir: str | Path, status: str = "finished") -> dict[str, Any]:
    """Marks the run ``finished`` (or ``failed``) with its finish time."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
    return update_meta(run_dir, status=status, finished_at=utc_now("milliseconds"))


def append_history(run_dir: str | Path, record: dict[str, Any]) -> None:
    """Appends one epoch record to ``history.jsonl`` (one line, flushed and fsynced; a line
    torn by a crash is skipped by :func:`read_history`)."""
    if "epoch" not in record:
        raise ValueError("a history record needs an 'epoch'")
    line = json.dumps(record, allow_nan=False) + "\n"
    with open(Path(run_dir) / HISTORY_FILE, "a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


def read_history(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / HISTORY_FILE
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # torn last line after a crash: the epoch is lost, the run is not
    return records


def metrics_path(run_dir: str | Path, split: str | None = None) -> Path:
    """``metrics.json`` (the run's final evaluation) or ``metrics_<split>.json``."""
    return Path(run_dir) / (METRICS_FILE if split is None else f"metrics_{split}.json")


def write_metrics(run_dir: str | Path, metrics: dict[str, Any], *, main: bool = True) -> Path:
    """Writes the final metrics to ``metrics.json`` (``main``) or, for another evaluated split,
    to ``metrics_<split>.json``."""
    return atomic_write_json(metrics_path(run_dir, None if main else metrics["split"]), metrics)


def prediction_path(run_dir: str | Path, split: str) -> Path:
    return Path(run_dir) / PREDICTIONS_DIR / f"{split}.parquet"


def check_predictions(df: pl.DataFrame, labels: list[str] | tuple[str, ...]) -> list[str]:
    """Problems with a predictions frame (empty list when it is well formed)."""
    problems = []
    for col in ("row_id", "user_key"):
        if col not in df.columns:
            problems.append(f"predictions lack column '{col}'")
    for label in labels:
        for col in (label, f"pred_{label}"):
            if col not in df.columns:
                problems.append(f"predictions lack column '{col}'")
    if not problems and df["row_id"].n_unique() != df.height:
        problems.append("predictions: 'row_id' is not unique")
    for col in df.columns:
        if col.startswith("pred_") and df[col].null_count() == 0 and df.height:
            lo, hi = df[col].min(), df[col].max()
            if lo < 0.0 or hi > 1.0:
                problems.append(f"predictions: '{col}' leaves [0, 1] ({lo}..{hi})")
    return problems


def write_predictions(run_dir: str | Path, split: str, df: pl.DataFrame,
                      labels: list[str] | tuple[str, ...]) -> Path:
    """Writes ``predictions/<split>.parquet`` atomically after checking its columns.

    Column order is kept: the keys, then ``<label>``/``pred_<label>`` in label order (primary
    first), then retention columns. Raises ``ValueError`` on a malformed frame (a bug in the
    caller, not bad user input).
    """
    problems = check_predictions(df, labels)
    if problems:
        raise ValueError("; ".join(problems))
    path = prediction_path(run_dir, split)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        df.write_parquet(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def prediction_labels(df: pl.DataFrame) -> list[str]:
    """The label heads of a predictions frame in column order (primary first), retention
    heads excluded."""
    return [c[5:] for c in df.columns
            if c.startswith("pred_") and c[5:] in df.columns and c[5:] not in RETENTION_TRUTHS]


@dataclass
class Run:
    """A run directory as read back by :func:`read_run`."""

    path: Path
    meta: dict[str, Any]
    config_text: str
    history: list[dict[str, Any]]
    metrics: dict[str, Any] | None
    split_metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    predictions: dict[str, Path] = field(default_factory=dict)

    @property
    def checkpoints(self) -> Path | None:
        path = self.path / CHECKPOINTS_DIR
        return path if path.is_dir() and any(path.iterdir()) else None

    @property
    def plots_dir(self) -> Path:
        return self.path / PLOTS_DIR

    @property
    def labels(self) -> list[str]:
        """Label heads (primary first) from ``run.json``, else from the metrics."""
        if self.meta.get("labels"):
            return list(self.meta["labels"])
        return list((self.metrics or {}).get("labels", {}))


def read_run(run_dir: str | Path) -> Run:
    """Reads everything a run directory holds (predictions as paths, not loaded)."""
    path = Path(run_dir)
    meta = read_meta(path)
    config = path / CONFIG_FILE
    main = metrics_path(path)
    split_metrics = {}
    for p in sorted(path.glob("metrics_*.json")):
        split_metrics[p.stem[len("metrics_"):]] = json.loads(p.read_text(encoding="utf-8"))
    preds = {p.stem: p for p in sorted((path / PREDICTIONS_DIR).glob("*.parquet"))}
    return Run(
        path=path, meta=meta,
        config_text=config.read_text(encoding="utf-8") if config.is_file() else "",
        history=read_history(path),
        metrics=json.loads(main.read_text(encoding="utf-8")) if main.is_file() else None,
        split_metrics=split_metrics, predictions=preds,
    )
