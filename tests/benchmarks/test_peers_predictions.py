"""benchmarks/peers.py keeps each model's seed-ensemble test predictions for quality.py."""

from __future__ import annotations

import json

import numpy as np
import polars as pl

from benchmarks.peers_paired import predictions_dir, save_predictions, seed_ensemble


def test_each_model_is_kept_as_its_seed_ensemble_with_its_validation_gauc(tmp_path):
    test = {"row_id": np.array([5, 9, 2]), "user_key": np.array([0, 1, 1]), "y": np.array([1, 0, 1])}
    probs = {"ours": [np.array([0.9, 0.2, 0.6]), np.array([0.7, 0.4, 0.5])],
             "FuxiCTR DNN": [np.array([0.6, 0.3, 0.8])]}
    rows = [{"dataset": "d", "model": "ours", "valid_gauc": 0.6},
            {"dataset": "d", "model": "ours", "valid_gauc": 0.7},
            {"dataset": "d", "model": "FuxiCTR DNN", "valid_gauc": 0.65},
            {"dataset": "other", "model": "ours", "valid_gauc": 0.1}]
    out = predictions_dir("d", ['data.split="user_time"'], tmp_path)
    assert out.parent == tmp_path and out.name.startswith("d-set-")
    save_predictions(out, test, probs, rows, "d", best="FuxiCTR DNN")
    index = json.loads((out / "index.json").read_text())
    assert index["best_fuxictr_on_valid"] == "FuxiCTR DNN"
    assert index["models"]["ours"]["valid_gauc"] == np.mean([0.6, 0.7])
    assert index["models"]["ours"]["seeds"] == 2
    kept = pl.read_parquet(out / index["models"]["ours"]["file"])
    assert kept["row_id"].to_list() == [5, 9, 2] and kept["y"].to_list() == [1, 0, 1]
    np.testing.assert_allclose(kept["p"].to_numpy(), seed_ensemble(probs["ours"]))
