"""Constructed run directories for the evaluation, tracking and selection tests.

The training loop writes run directories through ``recsys.runs.rundir``; these helpers write the
same files from synthetic predictions so the tests do not need a model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from recsys.evaluation.metrics import compute_metrics
from recsys.runs import rundir


def truth_frame(n_users: int = 60, rows_per_user: int = 20, seed: int = 0) -> pl.DataFrame:
    """Row keys and truths: a latent per-row propensity drives ``like`` and the retention."""
    rng = np.random.default_rng(seed)
    n = n_users * rows_per_user
    user = np.repeat(np.arange(n_users), rows_per_user)
    signal = rng.normal(size=n)
    like = (rng.random(n) < 1 / (1 + np.exp(-2 * signal))).astype(np.int8)
    ret = (rng.random(n) < 1 / (1 + np.exp(-signal))).astype(np.int8)
    censored = rng.random(n) < 0.2
    lt7 = np.where(ret == 1, rng.integers(1, 8, n), 0)
    return pl.DataFrame({
        "row_id": np.arange(n, dtype=np.int64), "user_id": user * 7 + 3, "item_id": rng.integers(0, 40, n),
        "user_key": user, "cold_item": rng.random(n) < 0.15, "cold_user": user < 6,
        "like": like, "_signal": signal,
        "return_7d": pl.Series(np.where(censored, None, ret).tolist(), dtype=pl.Int8),
        "lt7": pl.Series(np.where(censored, None, lt7).tolist(), dtype=pl.Int32),
    })


def with_predictions(truth: pl.DataFrame, noise: float, seed: int = 1) -> pl.DataFrame:
    """Predictions whose quality falls with ``noise`` (the same seed gives the same noise)."""
    rng = np.random.default_rng(seed)
    signal = truth["_signal"].to_numpy()
    score = 1 / (1 + np.exp(-(2 * signal + noise * rng.normal(size=signal.size))))
    ret_score = 1 / (1 + np.exp(-(signal + noise * rng.normal(size=signal.size))))
    return truth.drop("_signal").with_columns(
        pred_like=pl.Series(score.astype(np.float32)),
        pred_return_7d=pl.Series(ret_score.astype(np.float32)),
    ).select("row_id", "user_id", "item_id", "user_key", "cold_item", "cold_user", "like",
             "pred_like", "return_7d", "pred_return_7d", "lt7")


def make_run(root: Path, name: str, preds: pl.DataFrame, *, model_name: str | None = None,
             epochs: int = 2, checkpoints: bool = True, status: str = "finished") -> Path:
    """A finished training run directory as the training loop writes it."""
    run_dir = rundir.init_run(
        root / name, config_toml='[train]\nlr = 0.001\nepochs = 2\n[model]\nsizes = [64, 32]\n',
        preset="demo", model_name=model_name, labels=["like"], dataset_dir="/data/synth",
        dataset_fingerprint="fp-123", commit="abc123")
    for epoch in range(1, epochs + 1):
        valid = compute_metrics(preds, ["like"], "valid")
        rundir.append_history(run_dir, {"epoch": epoch, "step": 10 * epoch,
                                        "train_loss": 0.7 / epoch, "samples_per_s": 1000.0,
                                        "valid": valid})
    rundir.write_predictions(run_dir, "test", preds, ["like"])
    rundir.write_metrics(run_dir, compute_metrics(
        preds, ["like"], "test", {"train_samples_per_s": 1000.0, "eval_samples_per_s": 5000.0}))
    if checkpoints:
        (run_dir / rundir.CHECKPOINTS_DIR).mkdir()
        (run_dir / rundir.CHECKPOINTS_DIR / "model.pt").write_bytes(b"weights of " + name.encode())
    rundir.finish_run(run_dir, status)
    return run_dir


_TEMPLATES: dict[str, Path] = {}


def fresh_store(tmp_path: Path, template_root: Path) -> str:
    """A SQLite tracking URI of an empty, isolated store under ``tmp_path``.

    Creating an MLflow database runs all its schema migrations (seconds); the first call
    builds one template database under ``template_root`` and later calls copy the file.
    """
    import shutil

    from mlflow import MlflowClient

    key = str(template_root)
    if key not in _TEMPLATES:
        template = template_root / "template.db"
        MlflowClient(f"sqlite:///{template}").search_experiments()  # creates the tables
        _TEMPLATES[key] = template
    db = tmp_path / "store" / "mlflow.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_TEMPLATES[key], db)
    return f"sqlite:///{db}"
