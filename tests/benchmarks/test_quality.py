"""benchmarks/quality.py: the seed ensembles and the paired em3 − id_only interval."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from benchmarks import quality_paired, quality_runs
from recsys.evaluation.metrics import auc


def _write_run(run_dir: Path, row_id: np.ndarray, user: np.ndarray, y: np.ndarray,
               pred: np.ndarray, cold: np.ndarray) -> None:
    """A finished run as quality.py reads it: metrics.json (its label) and test predictions."""
    (run_dir / "predictions").mkdir(parents=True)
    (run_dir / "metrics.json").write_text(json.dumps({"labels": {"click": {}}}))
    pl.DataFrame({"row_id": row_id, "user_id": user, "cold_item": cold, "click": y,
                  "pred_click": pred.astype(np.float32)}).write_parquet(
        run_dir / "predictions" / "test.parquet")


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """Two presets × 2 seeds on 3,000 rows of 150 users: em3's scores carry the label's signal
    (plus noise), id_only's a weaker share of it; rows are stored in a different order per run."""
    monkeypatch.setattr(quality_runs, "WORK", tmp_path)
    rng = np.random.default_rng(0)
    n = 3000
    row_id = np.arange(n) * 7 + 3
    user = rng.integers(0, 150, n)
    y = rng.integers(0, 2, n).astype(np.int8)
    cold = rng.random(n) < 0.3
    runs = {}
    for preset, signal in (("id_only", 0.3), ("em3", 1.5)):
        for seed in (0, 1):
            pred = 1 / (1 + np.exp(-(signal * (y - 0.5) + rng.normal(0, 1, n))))
            order = rng.permutation(n)
            run_dir = quality_runs.runs_root("toy", []) / f"{preset}-s{seed}"
            _write_run(run_dir, row_id[order], user[order], y[order], pred[order], cold[order])
            runs[(preset, seed)] = pred
    return {"row_id": row_id, "user": user, "y": y, "cold": cold, "runs": runs}


def test_seed_ensemble_is_the_sigmoid_of_the_mean_logit_in_row_order(world: dict) -> None:
    dirs = [quality_runs.runs_root("toy", []) / f"em3-s{s}" for s in (0, 1)]
    ens = quality_paired.seed_ensemble(dirs, "click")
    assert ens["row_id"].to_list() == sorted(world["row_id"].tolist())
    p = np.stack([world["runs"][("em3", s)].astype(np.float32).astype(np.float64) for s in (0, 1)])
    expected = 1 / (1 + np.exp(-np.log(p / (1 - p)).mean(axis=0)))
    np.testing.assert_allclose(ens["pred_click"].to_numpy(), expected, rtol=1e-6)


def test_paired_gap_measures_em3_minus_id_only_with_an_interval_around_it(world: dict) -> None:
    gap = quality_paired.paired_gap("toy", [], [0, 1], n_boot=400)
    assert (gap["champion"], gap["challenger"]) == ("id_only", "em3")
    ens = {p: quality_paired.seed_ensemble([quality_runs.runs_root("toy", []) / f"{p}-s{s}" for s in (0, 1)],
                                    "click") for p in ("id_only", "em3")}
    y = ens["em3"]["click"].to_numpy()
    expected = auc(y, ens["em3"]["pred_click"].to_numpy()) - auc(y, ens["id_only"]["pred_click"].to_numpy())
    assert gap["auc"]["gain"] == pytest.approx(expected)
    assert gap["auc"]["users"] == len(np.unique(world["user"])) and gap["auc"]["rows"] == y.size
    # A large, real gain: the interval holds it and excludes zero.
    assert 0.2 < gap["auc"]["ci_low"] < gap["auc"]["gain"] < gap["auc"]["ci_high"]
    assert gap["auc"]["p_value"] < 0.01
    cold = ens["em3"]["cold_item"].to_numpy()
    assert gap["auc_cold_item"]["rows"] == int(cold.sum())
    expected_cold = (auc(y[cold], ens["em3"]["pred_click"].to_numpy()[cold])
                     - auc(y[cold], ens["id_only"]["pred_click"].to_numpy()[cold]))
    assert gap["auc_cold_item"]["gain"] == pytest.approx(expected_cold)
    assert gap["gauc"]["ci_low"] > 0


def test_paired_gap_is_none_until_every_run_finished(world: dict) -> None:
    assert quality_paired.paired_gap("toy", [], [0, 1, 2]) is None


def test_paired_gap_refuses_runs_tested_on_different_rows(world: dict) -> None:
    path = quality_runs.runs_root("toy", []) / "em3-s1" / "predictions" / "test.parquet"
    frame = pl.read_parquet(path)
    frame.with_columns(pl.col("row_id") + 1).write_parquet(path)
    with pytest.raises(ValueError, match="test rows differ"):
        quality_paired.paired_gap("toy", [], [0, 1])


def test_a_pretrained_row_trains_its_preset_with_the_fetched_text_tower(tmp_path, monkeypatch):
    from benchmarks import pretrained
    from recsys.config import load_train_config

    monkeypatch.setattr(pretrained, "ensure_encoder", lambda name: tmp_path / name)
    preset, extra = quality_runs.row_setup("em3 + MiniLM text")
    assert (preset, quality_runs.run_stem("em3 + MiniLM text")) == ("em3", "em3+minilm")
    cfg = load_train_config(preset, extra)  # overrides the config accepts
    assert (cfg.content.text, cfg.content.tokens) == (str(tmp_path / "minilm"), 32)
    assert quality_runs.target_key("em3 + MiniLM text") == "em3_minilm"
    assert quality_runs.row_setup("em3") == ("em3", []) and quality_runs.run_stem("em3") == "em3"
    assert quality_runs.target_key("em3") == "em3"
    # No wheel to be had (no network, say): the row is skipped, not trained with tiny towers.
    monkeypatch.setattr(pretrained, "ensure_encoder", lambda name: None)
    assert quality_runs.row_setup("em3 + MiniLM text") is None


def test_paired_gap_of_a_pretrained_row_reads_its_own_runs(world: dict) -> None:
    import shutil

    root = quality_runs.runs_root("toy", [])
    assert quality_paired.paired_gap("toy", [], [0, 1], n_boot=200, challenger="em3 + MiniLM text") is None
    for seed in (0, 1):  # the row's runs are em3+minilm-s<seed>; here, copies of em3's
        shutil.copytree(root / f"em3-s{seed}", root / f"em3+minilm-s{seed}")
    row = quality_paired.paired_gap("toy", [], [0, 1], n_boot=200, challenger="em3 + MiniLM text")
    em3 = quality_paired.paired_gap("toy", [], [0, 1], n_boot=200)
    assert row["challenger"] == "em3 + MiniLM text" and row["champion"] == "id_only"
    assert row["auc"] == em3["auc"] and row["auc_cold_item"] == em3["auc_cold_item"]


def test_real_tower_rows_train_their_presets_with_both_fetched_towers(tmp_path, monkeypatch):
    from benchmarks import pretrained
    from recsys.config import load_train_config

    monkeypatch.setattr(pretrained, "ensure_encoder", lambda name: tmp_path / name)
    for row, preset in ((quality_runs.EM3_REAL, "em3"), (quality_runs.FROZEN_REAL, "frozen_content")):
        got, extra = quality_runs.row_setup(row)
        cfg = load_train_config(got, extra)
        assert got == preset
        assert (cfg.content.text, cfg.content.vision, cfg.content.tokens) == (
            str(tmp_path / "minilm"), str(tmp_path / "resnet50"), 32)
        assert quality_runs.run_stem(row) == f"{preset}+minilm+resnet50"
    # Either tower missing: the row is skipped.
    monkeypatch.setattr(pretrained, "ensure_encoder",
                        lambda name: None if name == "resnet50" else tmp_path / name)
    assert quality_runs.row_setup(quality_runs.EM3_REAL) is None


def _history(run_dir: Path, valid_gauc: list[float], best: int) -> None:
    lines = [json.dumps({"epoch": e + 1, "valid": {"labels": {"click": {"auc": 0.5, "gauc": g}}}})
             for e, g in enumerate(valid_gauc)]
    (run_dir / "history.jsonl").write_text("\n".join(lines) + "\n")
    (run_dir / "metrics.json").write_text(json.dumps({"labels": {"click": {}}, "best_epoch": best}))


def _peer_predictions(world: dict, valid_gauc: float, shift_rows: int = 0) -> Path:
    from benchmarks.peers_paired import predictions_dir

    out = predictions_dir("toy", [])
    out.mkdir(parents=True)
    rng = np.random.default_rng(5)
    y = world["y"]
    p = 1 / (1 + np.exp(-(0.8 * (y - 0.5) + rng.normal(0, 1, y.size))))
    pl.DataFrame({"row_id": world["row_id"] + shift_rows, "user_key": world["user"], "y": y,
                  "p": p}).write_parquet(out / "model_1.parquet")
    (out / "index.json").write_text(json.dumps({
        "best_fuxictr_on_valid": "FuxiCTR DNN",
        "models": {"FuxiCTR DNN": {"file": "model_1.parquet", "seeds": 1, "valid_gauc": valid_gauc}}}))
    return out


@pytest.mark.parametrize(("peer_valid", "champion"), [(0.9, "FuxiCTR DNN"), (0.1, "id_only")])
def test_em3_real_is_compared_with_the_id_model_best_on_validation(world, monkeypatch, peer_valid,
                                                                   champion):
    import shutil

    from benchmarks import peers_paired

    monkeypatch.setattr(peers_paired, "PREDICTIONS", quality_runs.WORK / "peers")
    root = quality_runs.runs_root("toy", [])
    for seed in (0, 1):
        shutil.copytree(root / f"em3-s{seed}", root / f"em3+minilm+resnet50-s{seed}")
        _history(root / f"id_only-s{seed}", [0.3, 0.5, 0.4], best=2)
    assert quality_paired.kept_valid_gauc(root / "id_only-s0") == 0.5
    assert quality_paired.best_id_gap("toy", [], [0, 1]) is not None  # id_only alone without peers
    theirs = pl.read_parquet(_peer_predictions(world, peer_valid) / "model_1.parquet")
    gap = quality_paired.best_id_gap("toy", [], [0, 1])
    assert (gap["champion"], gap["challenger"]) == (champion, quality_runs.EM3_REAL)
    assert gap["valid_gauc"] == {"id_only": 0.5, "FuxiCTR DNN": peer_valid}
    em3 = quality_paired.seed_ensemble([root / f"em3-s{s}" for s in (0, 1)], "click")
    if champion == "FuxiCTR DNN":
        their = em3.select("row_id").join(theirs, on="row_id", how="left", maintain_order="left")
        y = em3["click"].to_numpy()
        expected = auc(y, em3["pred_click"].to_numpy()) - auc(y, their["p"].to_numpy())
        assert gap["auc"]["gain"] == pytest.approx(expected)
    else:
        assert gap["auc"] == quality_paired.paired_gap("toy", [], [0, 1])["auc"]


def test_em3_real_refuses_peer_predictions_of_other_rows(world, monkeypatch):
    import shutil

    from benchmarks import peers_paired

    monkeypatch.setattr(peers_paired, "PREDICTIONS", quality_runs.WORK / "peers")
    root = quality_runs.runs_root("toy", [])
    for seed in (0, 1):
        shutil.copytree(root / f"em3-s{seed}", root / f"em3+minilm+resnet50-s{seed}")
        _history(root / f"id_only-s{seed}", [0.5], best=1)
    _peer_predictions(world, 0.9, shift_rows=1)
    with pytest.raises(ValueError, match="test rows differ"):
        quality_paired.best_id_gap("toy", [], [0, 1])


def test_real_data_targets_need_the_gain_and_an_interval_above_zero():
    def gap(gain: float, low: float) -> dict:
        return {"gain": gain, "ci_low": low, "ci_high": gain + 0.01}

    paired = {"movielens": {
        "vs_best_id": {"auc": gap(0.001, -0.002), "gauc": gap(0.006, -0.001),
                       "auc_cold_item": gap(0.03, 0.004)},
        "vs_frozen_content": {"auc": gap(-0.001, -0.01), "gauc": gap(0.002, -0.003)}}}
    met = {t["name"]: t["met"] for t in quality_paired.real_data_targets(paired)}
    stem = "movielens_em3_real_minus_best_id"
    assert met == {f"{stem}_gauc": True, f"{stem}_gauc_ci_low": False,
                   f"{stem}_auc_cold_item": True, f"{stem}_auc_cold_item_ci_low": True,
                   f"{stem}_auc": True,
                   "movielens_em3_real_minus_frozen_content_real_auc": False,
                   "movielens_em3_real_minus_frozen_content_real_gauc": True}


def test_a_run_of_other_data_is_set_aside_not_reused(tmp_path):
    from data.dataset import dataset_fingerprint
    from tests.data.contract_fixtures import write_dataset

    data = write_dataset(tmp_path / "ds")
    run = tmp_path / "runs" / "em3-s0"
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"dataset": {"fingerprint": dataset_fingerprint(data)}}))
    assert quality_runs.set_aside_if_stale(run, data) is None and run.is_dir()
    (run / "run.json").write_text(json.dumps({"dataset": {"fingerprint": "old"}}))
    assert quality_runs.set_aside_if_stale(run, data) == run.with_name("em3-s0.stale-old")
    assert not run.exists() and (run.with_name("em3-s0.stale-old") / "run.json").is_file()


def test_a_recorded_row_of_other_data_is_dropped_not_shown(tmp_path, monkeypatch):
    from data.dataset import dataset_fingerprint
    from tests.data.contract_fixtures import write_dataset

    monkeypatch.setattr(quality_runs, "WORK", tmp_path)
    data = write_dataset(tmp_path / "ds")
    row = {"dataset": "toy", "preset": "em3", "seeds": 2}
    for seed, fingerprint in ((0, dataset_fingerprint(data)), (1, "old")):
        run = quality_runs.runs_root("toy", []) / f"em3-s{seed}"
        run.mkdir(parents=True)
        (run / "run.json").write_text(json.dumps({"dataset": {"fingerprint": fingerprint}}))
    assert quality_runs.still_current(row, None, [])  # dataset not prepared here: kept as recorded
    assert not quality_runs.still_current(row, data, [])  # seed 1 is of other data
    (quality_runs.runs_root("toy", []) / "em3-s1" / "run.json").write_text(
        json.dumps({"dataset": {"fingerprint": dataset_fingerprint(data)}}))
    assert quality_runs.still_current(row, data, [])
