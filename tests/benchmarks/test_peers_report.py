"""The report side of benchmarks/peers.py: the best FuxiCTR model is picked on validation GAUC,
the step-2 targets compare ours with it, and the paired interval is ours − it."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.peers import parse_models
from benchmarks.peers_paired import best_on_valid, paired_interval, seed_ensemble
from benchmarks.peers_report import OURS, best_peer_targets, summary, targets_for

DNN, DIN = "FuxiCTR 2.3.10 DNN", "FuxiCTR 2.3.10 DIN"


def _row(model: str, seed: int, auc: float, gauc: float, loss: float,
         valid_gauc: float | None = None) -> dict:
    return {"model": model, "dataset": "synth", "seed": seed, "test_auc": auc, "gauc": gauc,
            "logloss": loss, "auc_cold_item": 0.6, "valid_gauc": valid_gauc,
            "train_samples_per_s": 1000.0, "first_epoch_samples_per_s": 900.0,
            "peak_rss_mb": 500.0}


ROWS = [_row(OURS, s, 0.70, 0.66, 0.50) for s in (0, 1)] + \
    [_row(DNN, s, 0.72, 0.60, 0.49, valid_gauc=0.61) for s in (0, 1)] + \
    [_row(DIN, s, 0.69, 0.64, 0.51, valid_gauc=0.65) for s in (0, 1)]


def test_best_fuxictr_model_is_picked_on_validation_not_test() -> None:
    # DNN has the better test AUC, DIN the better validation GAUC: DIN is the one compared with
    assert best_on_valid(ROWS, "synth") == DIN
    assert best_on_valid([r for r in ROWS if r["model"] == OURS], "synth") is None


def test_step2_targets_compare_ours_with_the_best_on_valid() -> None:
    got = {t["name"]: t for t in best_peer_targets(ROWS, "synth")}
    assert got["gauc_id_only_minus_best_fuxictr_synth"]["value"] == pytest.approx(0.02)
    assert got["test_auc_id_only_minus_best_fuxictr_synth"]["value"] == pytest.approx(0.01)
    # logloss: lower is better, so the gap is theirs − ours and >= 0 means ours not worse
    assert got["logloss_best_fuxictr_minus_id_only_synth"]["value"] == pytest.approx(0.01)
    assert all(t["met"] and DIN in t["note"] for t in got.values())


def test_din_targets_use_din_and_are_left_out_without_it() -> None:
    names = [t["name"] for t in targets_for(ROWS, "synth")]
    assert "test_auc_id_only_minus_fuxictr_din_synth" in names
    assert "gauc_id_only_minus_best_fuxictr_synth" in names
    only_dnn = [r for r in ROWS if r["model"] != DIN]
    names = [t["name"] for t in targets_for(only_dnn, "synth")]
    assert not any("fuxictr_din" in n for n in names)
    assert "gauc_id_only_minus_best_fuxictr_synth" in names


def test_recorded_rows_without_validation_gauc_keep_their_targets() -> None:
    """peers.json recorded before this change (DIN only, no valid_gauc, no logloss)."""
    old = [{k: v for k, v in r.items() if k not in ("valid_gauc", "logloss")}
           for r in ROWS if r["model"] != DNN]
    assert best_peer_targets(old, "synth") == []
    names = [t["name"] for t in targets_for(old, "synth")]
    assert names[:2] == ["test_auc_id_only_minus_fuxictr_din_synth",
                         "train_samples_per_s_ratio_id_only_over_fuxictr_din_synth"]
    assert not any("best_fuxictr" in n for n in names)  # the em3 rows of quality.json may follow
    means = {r["model"]: r for r in summary(ROWS)}
    assert means[DIN]["valid_gauc"] == 0.65 and means[OURS]["logloss"] == 0.5


def test_paired_interval_is_ours_minus_the_peer() -> None:
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(40), 25)
    y = rng.integers(0, 2, users.size)
    good = [np.clip(0.5 + 0.3 * (y - 0.5) + rng.normal(0, 0.1, y.size), 0.01, 0.99)
            for _ in range(2)]
    poor = [np.clip(0.5 + rng.normal(0, 0.1, y.size), 0.01, 0.99) for _ in range(2)]
    out = paired_interval("click", y, users, good, poor, DIN, OURS, n_boot=200)
    assert out["champion"] == DIN and out["challenger"] == OURS and out["seeds"] == 2
    for kind in ("auc", "gauc", "logloss"):  # ours is better on every metric
        assert out[kind]["gain"] > 0 and out[kind]["ci_low"] > 0
        assert out[kind]["users"] == 40 and out[kind]["rows"] == y.size


def test_seed_ensemble_is_the_mean_logit() -> None:
    got = seed_ensemble([np.array([0.5, 0.9]), np.array([0.5, 0.1])])
    np.testing.assert_allclose(got, [0.5, 0.5])


def test_models_option() -> None:
    assert parse_models("DIN") == ("DIN",)
    assert parse_models("DNN, DeepFM") == ("DNN", "DeepFM")
    with pytest.raises(Exception, match="unknown FuxiCTR model"):
        parse_models("xDeepFM")


def test_em3_reference_rows_come_from_the_quality_results_of_the_same_overrides(
        tmp_path, monkeypatch) -> None:
    import json

    import benchmarks.peers_report as report

    def quality(auc: float) -> str:
        return json.dumps({"rows": [{"dataset": "synth", "preset": "em3", "seeds": 3, "auc": auc,
                                     "gauc": 0.6, "auc_cold_item": 0.7}]})

    (tmp_path / "quality.json").write_text(quality(0.81))  # the default (time) split
    (tmp_path / "quality-set-abc.json").write_text(quality(0.77))  # e.g. the user_time split
    monkeypatch.setattr(report, "RESULTS_DIR", tmp_path)
    assert report.em3_reference("synth")["test_auc"] == 0.81
    assert report.em3_reference("synth", quality="quality-set-abc")["test_auc"] == 0.77
    assert report.em3_reference("synth", quality="quality-set-none") is None
    means, targets = report.summarise(ROWS, "quality-set-abc")
    assert [m["test_auc"] for m in means if m["model"].startswith("ours: em3")] == [0.77]
    em3_auc = next(t for t in targets if t["name"].startswith("em3_minus_best_of"))
    assert em3_auc["value"] == pytest.approx(0.77 - 0.70)  # best of ours 0.70 and DIN 0.69
