"""Offline evaluation of a trained run on a split of a dataset (the same one or a newer log),
or of prepared shards made with the run's settings and vocabularies (scored a chunk of rows
at a time; docs/prepared_shards.md).

Ids are encoded with the run's own vocabularies (``data_state.json``), the model is rebuilt
from the run's ``config.toml`` in the current world (one process or ``torchrun``; DCP reshards
the checkpoint), and the result is an evaluation run directory of its own: ``metrics.json``,
predictions and, when tracking is on, an MLflow run.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

from data.batch import FeatureLayout
from data.dataset import load_dataset
from data.prepare import PrepareConfig, prepare
from data.shard_manifest import is_shard_dir
from data.shards import load_prepared
from data.vocab import Vocab
from ranking.dist import DistEnv, process_group
from recsys.config import TrainConfig, load_run_config, train_config_toml
from recsys.errors import UsageError
from recsys.evaluation.metrics import compute_metrics
from recsys.evaluation.predict import predictions_frame, score_shards, score_split
from recsys.model.build import apply_threads, best_checkpoint, build_model
from recsys.model.content_setup import load_item_tokens
from recsys.runs import rundir
from recsys.runs.run_artifacts import load_data_state
from recsys.training.train_data import open_eval_shards, prediction_columns

SPLITS = ("train", "valid", "test")


def evaluate(run: str | Path, data_dir: str | Path, split: str = "test", out: str | Path | None = None,
             tracking: bool = True, tracking_uri: str | None = None,
             progress: bool = True) -> dict[str, Any] | None:
    """Scores ``split`` of ``data_dir`` with the best checkpoint of ``run``; returns the metrics
    (rank 0) and writes them to the evaluation run directory ``out`` (default RUN/eval-SPLIT)."""
    run = Path(run)
    if split not in SPLITS:
        raise UsageError(f"--split must be one of {SPLITS}, got '{split}'")
    if not (run / rundir.CONFIG_FILE).is_file():
        raise UsageError(f"--run {run}: not a training run directory (no {rundir.CONFIG_FILE})")
    checkpoint = best_checkpoint(run)
    if checkpoint is None:
        raise UsageError(f"--run {run}: no complete checkpoint to evaluate")
    out = Path(out) if out is not None else run / f"eval-{split}"
    if (out / rundir.META_FILE).exists():
        raise UsageError(f"{out} already holds an evaluation; pass another --out")
    cfg = load_run_config(run / rundir.CONFIG_FILE)
    cfg.data.dir = str(data_dir)
    layout, vocabs, prep = load_data_state(run)
    apply_threads(cfg)
    with process_group() as env:
        metrics = _score_and_write(run, data_dir, split, out, checkpoint, cfg, layout, vocabs,
                                   prep, env, progress)
    if metrics is None:  # ranks other than 0
        return None
    if tracking and cfg.tracking.enabled:
        from recsys.runs.tracking import track_run

        with warnings.catch_warnings():
            warnings.simplefilter("default")
            track_run(out, tracking_uri=tracking_uri or cfg.tracking.uri or None)
    return metrics


def _score_and_write(run: Path, data_dir: str | Path, split: str, out: Path, checkpoint: Path,
                     cfg: TrainConfig, layout: FeatureLayout, vocabs: dict[str, Vocab],
                     prep: dict, env: DistEnv, progress: bool) -> dict[str, Any] | None:
    """Scores ``split`` in the current world; rank 0 writes the evaluation run and returns
    its metrics, the other ranks return None."""
    started_at = rundir.utc_now("milliseconds")  # the evaluation run's start, not its writing
    prep["fractions"] = tuple(prep.get("fractions", (0.8, 0.1, 0.1)))
    if is_shard_dir(data_dir):  # prepared shards: the split read into memory
        if cfg.content.enabled:
            raise UsageError(f"--data {data_dir}: the run uses content features, which need the "
                             "items' images and text; prepared shards do not hold them, so "
                             "evaluate it from the dataset directory")
        shards = open_eval_shards(data_dir, prep, vocabs)
        prepared = load_prepared(shards, (split,), prediction_columns(shards.layout))
        dataset = prepared.dataset
    else:
        shards = None
        dataset = load_dataset(data_dir, allow_missing_media=cfg.data.allow_missing_media)
        prepared = prepare(dataset, PrepareConfig(**prep), vocabs=vocabs)
    have, want = prepared.layout, layout
    if (have.pooled, have.dense, have.labels) != (want.pooled, want.dense, want.labels):
        raise UsageError(f"{data_dir} does not have the features the run was trained on: "
                         f"run {dict(want.pooled)} / {want.dense} / {want.labels}, data "
                         f"{dict(have.pooled)} / {have.dense} / {have.labels}")
    tokens = load_item_tokens(cfg, dataset, env, progress=progress) if cfg.content.enabled else None
    model = build_model(cfg, prepared.layout, tokens, env, checkpoint)
    start = time.perf_counter()
    score = score_split if shards is None else score_shards
    probs, rate = score(model, prepared if shards is None else shards, split,
                        cfg.train.eval_batch_size, env.device, env.rank, env.world_size,
                        progress=progress and env.is_main)
    if probs is None:
        return None
    frame = predictions_frame(prepared, split, probs)
    metrics = compute_metrics(frame, list(layout.labels), split,
                              {"train_samples_per_s": None, "eval_samples_per_s": rate * env.world_size})
    metrics["evaluated"] = {"run": str(run), "checkpoint": checkpoint.name,
                            "seconds": round(time.perf_counter() - start, 3)}
    meta = rundir.read_meta(run)
    rundir.init_run(out, config_toml=train_config_toml(cfg), kind="evaluate", preset=meta.get("preset"),
                    model_name=None, labels=list(layout.labels), dataset_dir=dataset.root,
                    dataset_fingerprint=dataset.fingerprint)
    # when it started and what it evaluated, for MLflow (recsys.runs.tracking_context.evaluated)
    tracking = meta.get("tracking") or {}
    rundir.update_meta(out, created_at=started_at, evaluated={
        "run_dir": str(run.resolve()), "run_name": meta.get("name"),
        "model_name": meta.get("model_name"), "checkpoint": checkpoint.name,
        "tracking": {k: tracking.get(k) for k in ("uri", "run_id", "synced", "model_version")}})
    rundir.write_predictions(out, split, frame, list(layout.labels))
    rundir.write_metrics(out, metrics)
    rundir.finish_run(out)
    return metrics
