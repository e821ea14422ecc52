"""The FuxiCTR side of ``benchmarks/peers.py``: its own virtual environment and one training
job per model and seed (run by ``peers_fuxictr_worker.py`` inside that environment).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from benchmarks.peers_export import PRESET
from benchmarks.peers_model_zoo import COMMIT, PACKAGES, package_dir

ROOT = Path(__file__).resolve().parents[1]
PEER_VENV = ROOT / ".venv-peers"
WORKER = Path(__file__).resolve().parent / "peers_fuxictr_worker.py"
TORCH_VERSION = "2.13.0"
FUXICTR_VERSION = "2.3.10"  # the newest on PyPI when written; its wheel ships model_zoo/LongCTR


# ---- the peer environment -------------------------------------------------------------------
def _pip(python: Path, *args: str) -> None:
    subprocess.run([str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q",
                    *args], check=True)


def ensure_peer_env(venv: Path = PEER_VENV) -> Path:
    """Creates ``venv`` with CPU torch and FuxiCTR (once); returns its python.

    torch goes in first (``torch==2.13.0`` is the CPU wheel on these machines, docs/design.md §6), then
    FuxiCTR with torch pinned by a constraints file, so nothing can swap in a CUDA torch.
    FuxiCTR 2.3.10 declares no torch dependency; its real dependencies (pandas, polars, pyarrow,
    scikit-learn, h5py, ray[data], ...) install from its metadata as they are.
    """
    python = venv / "bin" / "python"
    stamp = venv / ".peers-stamp"
    want = f"torch=={TORCH_VERSION} fuxictr=={FUXICTR_VERSION}\n"
    if python.is_file() and stamp.is_file() and stamp.read_text() == want:
        return python
    print(f"setting up {venv} ({want.strip()}) ...", flush=True)
    interpreter = shutil.which("python3.11") or sys.executable
    subprocess.run([interpreter, "-m", "venv", "--clear", str(venv)], check=True)
    _pip(python, f"torch=={TORCH_VERSION}")
    constraints = venv / "constraints.txt"
    installed_torch = subprocess.run(
        [str(python), "-c", "import torch; print(torch.__version__)"],
        check=True, capture_output=True, text=True).stdout.strip()
    constraints.write_text(f"torch=={installed_torch}\n")
    _pip(python, "-c", str(constraints), f"fuxictr=={FUXICTR_VERSION}")
    check = subprocess.run(
        [str(python), "-c", "import torch, fuxictr, model_zoo.LongCTR.DIN; "
         "print(torch.__version__, torch.version.cuda, fuxictr.__version__)"],
        check=True, capture_output=True, text=True).stdout.split()
    if check[1] != "None":
        raise SystemExit(f"{venv}: pip installed a CUDA torch ({check[0]}); remove the venv and "
                         "install the CPU wheel (docs/design.md §6)")
    stamp.write_text(want)
    print(f"{venv}: torch {check[0]}, fuxictr {check[2]}", flush=True)
    return python


FUXICTR_MODELS = ("DNN", "DeepFM", "DIN")


def model_params(model: str, seed: int, epochs: int, num_workers: int, max_len: int,
                 work: Path) -> dict[str, Any]:
    """FuxiCTR parameters of ``model``: every size, rate and stopping rule as ours (the
    preset's ``ranking`` and ``train`` sections), the rest FuxiCTR's own templates
    (``model_zoo/*/config/model_config.yaml``): ReLU towers, Adam, no batch norm."""
    from recsys.config import load_train_config

    cfg = load_train_config(PRESET)
    r = cfg.ranking
    common = {
        "model": model, "model_root": str(work / "fuxictr_checkpoints"),
        "task": "binary_classification", "loss": "binary_crossentropy",
        "metrics": ["AUC", "logloss"], "optimizer": "adam",
        "learning_rate": r.dense_lr, "embedding_regularizer": 0, "net_regularizer": 0,
        "embedding_dim": r.embedding_dim, "net_dropout": r.dropout, "batch_norm": False,
        "batch_size": cfg.train.batch_size, "epochs": epochs, "shuffle": True, "seed": seed,
        "monitor": cfg.train.early_stop_metric.upper(), "monitor_mode": "max",
        # ours stops after patience + 1 epochs without improvement; FuxiCTR after patience
        "early_stop_patience": cfg.train.patience + 1, "save_best_only": True,
        "eval_steps": None, "num_workers": num_workers, "group_id": None,
        "use_features": None, "feature_specs": None, "feature_config": None,
        "pickle_feature_encoder": True, "debug_mode": False,
    }
    if model == "DIN":  # model_zoo/LongCTR/config/din_config: Dice attention unit
        return {**common, "attention_hidden_units": list(r.attention_hidden),
                "attention_hidden_activations": "Dice", "attention_output_activation": None,
                "attention_dropout": r.dropout, "din_use_softmax": r.attention_softmax,
                "dnn_hidden_units": list(r.over_arch), "dnn_activations": "ReLU",
                "max_len": max_len, "padding": "pre", "accumulation_steps": 1}
    # DNN and DeepFM: one MLP over the concatenated field embeddings (DeepFM adds its FM)
    return {**common, "hidden_units": list(r.over_arch), "hidden_activations": "ReLU"}


def run_fuxictr(python: Path, export: Path, meta: dict[str, Any], work: Path, seed: int,
                epochs: int, threads: int, num_workers: int, model: str = "DIN",
                zoo: Path | None = None) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Trains FuxiCTR's ``model`` in ``.venv-peers``: (its result, test and validation
    probabilities in the exported row order). ``zoo``: the checked model_zoo copy (DNN and
    DeepFM only)."""
    tag = f"fuxictr_{model}_{seed}"
    job = {
        "data_dir": str(export), "data_root": str(work), "dataset_id": tag,
        "threads": threads, "label_col": meta["label_col"],
        "feature_cols": meta["feature_cols" if model == "DIN" else "flat_feature_cols"],
        "result": str(work / f"{tag}.json"),
        "predictions": str(work / f"{tag}_test.parquet"),
        "valid_predictions": str(work / f"{tag}_valid.parquet"),
        "params": model_params(model, seed, epochs, num_workers, meta["max_len"], work),
    }
    if model != "DIN":
        if zoo is None:
            raise ValueError(f"FuxiCTR {model} needs the model_zoo copy (peers_model_zoo)")
        job["model_package"] = str(package_dir(zoo, model))
        job["model_source"] = f"{PACKAGES[model]} (reczoo/FuxiCTR@{COMMIT[:7]})"
    job_path = work / f"{tag}_job.json"
    job_path.write_text(json.dumps(job, indent=2))
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    subprocess.run([str(python), str(WORKER), str(job_path)], check=True, cwd=work, env=env)
    result = json.loads(Path(job["result"]).read_text())
    probs = pl.read_parquet(job["predictions"])["prob"].to_numpy()
    valid = pl.read_parquet(job["valid_predictions"])["prob"].to_numpy()
    return result, probs, valid
