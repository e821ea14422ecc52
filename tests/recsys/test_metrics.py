"""Metrics of docs/design.md §5 against plain reference implementations and hand-computed cases."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import spearmanr
from sklearn.metrics import log_loss, roc_auc_score

from recsys.evaluation.metrics import (
    auc,
    compute_metrics,
    gauc,
    group_auc,
    logloss,
    lookup,
    spearman,
)
from tests.recsys.run_fixtures import truth_frame, with_predictions


def reference_gauc(y, p, groups) -> tuple[float | None, int]:
    """The plain definition: a Python loop over users with scikit-learn's AUC."""
    total, weight, counted = 0.0, 0, 0
    for g in np.unique(groups):
        m = groups == g
        if len(np.unique(y[m])) == 2:
            total += m.sum() * roc_auc_score(y[m], p[m])
            weight += m.sum()
            counted += 1
    return (total / weight if weight else None), counted


def test_hand_computed_case():
    y = np.array([1, 0, 1, 0])
    p = np.array([0.9, 0.1, 0.4, 0.4])
    users = np.array([5, 5, 8, 8])
    # pairs (pos, neg): .9>.1, .9>.4, .4>.1, .4=.4 (½) → 3.5 / 4
    assert auc(y, p) == pytest.approx(0.875, abs=1e-15)
    # user 5: AUC 1; user 8: a tie → ½; weights 2 and 2
    assert gauc(y, p, users) == (pytest.approx(0.75, abs=1e-15), 2)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gauc_equals_reference_on_random_data(seed, dtype):
    rng = np.random.default_rng(seed)
    n = 3000
    groups = rng.integers(0, 250, n)
    y = (rng.random(n) < rng.random(250)[groups]).astype(np.int64)  # users of mixed base rates
    p = np.round(rng.random(n), 2).astype(dtype)  # rounding makes many ties
    value, counted = gauc(y, p, groups)
    ref, ref_counted = reference_gauc(y, p, groups)
    assert counted == ref_counted
    assert abs(value - ref) <= 1e-9


def test_gauc_general_scores_and_group_types():
    """Negative logits, ±0.0, float64 values that float32 cannot hold, string user ids."""
    rng = np.random.default_rng(7)
    n = 2000
    groups = rng.integers(0, 120, n)
    y = rng.integers(0, 2, n)
    p = rng.normal(size=n) * 3
    p[:50] = -0.0
    p[50:100] = 0.0
    p[100:150] = 1e-300  # distinct from 0 in float64, equal in float32
    ref = reference_gauc(y, p, groups)
    assert gauc(y, p, groups)[0] == pytest.approx(ref[0], abs=1e-9)
    names = np.array([f"user-{g}" for g in groups])
    assert gauc(y, p, names)[0] == pytest.approx(ref[0], abs=1e-9)
    assert gauc(y, p, groups - 60)[0] == pytest.approx(ref[0], abs=1e-9)  # negative keys
    per = group_auc(y, p, names)
    first = per.groups[0]
    m = names == first
    assert per.auc[0] == pytest.approx(roc_auc_score(y[m], p[m]), abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 6)), min_size=2, max_size=60))
def test_auc_equals_sklearn(pairs):
    y = np.array([a for a, _ in pairs])
    p = np.array([b / 6 for _, b in pairs])
    if len(np.unique(y)) < 2:
        assert auc(y, p) is None
    else:
        assert auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)


def test_undefined_metrics_are_none_never_half():
    y = np.ones(10, dtype=int)
    p = np.linspace(0, 1, 10)
    assert auc(y, p) is None
    assert auc(np.array([], dtype=int), np.array([])) is None
    assert gauc(y, p, np.arange(10) % 3) == (None, 0)
    # both classes overall, but never within one user
    assert gauc(np.array([1, 1, 0, 0]), np.array([.2, .3, .4, .5]), np.array([0, 0, 1, 1])) == (None, 0)
    assert spearman(np.array([1.0, 2.0, 3.0]), np.array([5.0, 5.0, 5.0])) is None
    assert spearman(np.array([1.0]), np.array([2.0])) is None
    assert logloss(np.array([], dtype=int), np.array([])) is None


def test_logloss_clips_like_design():
    y = np.array([1, 0, 1, 0])
    p = np.array([1.0, 0.0, 0.0, 0.25])  # exact 0/1 would be infinite without clipping
    expected = log_loss(y, np.clip(p, 1e-7, 1 - 1e-7))
    assert logloss(y, p) == pytest.approx(expected, rel=1e-12)
    assert logloss(y, p) == pytest.approx(-(2 * np.log(1 - 1e-7) + np.log(1e-7) + np.log(0.75)) / 4)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="0/1"):
        auc(np.array([0, 2]), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="finite"):
        auc(np.array([0, 1]), np.array([0.1, np.nan]))
    with pytest.raises(ValueError, match="equal-length"):
        gauc(np.array([0, 1]), np.array([0.1]), np.array([0, 0]))


def test_compute_metrics_structure_and_values():
    preds = with_predictions(truth_frame(n_users=40, rows_per_user=15), noise=1.0)
    m = compute_metrics(preds, ["like"], "test", {"train_samples_per_s": 10.0,
                                                  "eval_samples_per_s": 20.0})
    json.dumps(m, allow_nan=False)  # metrics.json must be strict JSON
    assert m["split"] == "test" and m["rows"] == 600 and m["users"] == 40
    like = m["labels"]["like"]
    assert set(like) >= {"auc", "gauc", "logloss", "auc_cold_item", "auc_cold_user"}
    y, p = preds["like"].to_numpy(), preds["pred_like"].to_numpy()
    assert like["auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert like["gauc"] == pytest.approx(reference_gauc(y, p, preds["user_key"].to_numpy())[0],
                                         abs=1e-9)
    cold = preds["cold_item"].to_numpy()
    assert like["auc_cold_item"] == pytest.approx(roc_auc_score(y[cold], p[cold]), abs=1e-12)
    assert like["rows_cold_item"] == int(cold.sum())
    users = preds["user_key"].to_numpy()
    want, n = reference_gauc(y[cold], p[cold], users[cold])
    assert 0 < n < like["gauc_users"]
    assert like["gauc_cold_item"] == pytest.approx(want, abs=1e-9)
    assert like["gauc_users_cold_item"] == n
    # retention: only uncensored rows count
    ret = preds.filter(pl.col("return_7d").is_not_null())
    r7 = m["retention"]["return_7d"]
    assert r7["rows"] == ret.height < preds.height
    assert r7["auc"] == pytest.approx(roc_auc_score(ret["return_7d"], ret["pred_return_7d"]))
    per_user = ret.group_by("user_key").agg(pl.col("lt7").mean(), pl.col("pred_return_7d").mean())
    rho = spearmanr(per_user["lt7"], per_user["pred_return_7d"]).statistic
    assert m["retention"]["lt7_spearman"] == pytest.approx(rho, abs=1e-12)
    assert m["retention"]["lt7_users"] == per_user.height
    # no 14-day columns in these predictions: null with a reason, not 0.5
    assert m["retention"]["return_14d"] == {"auc": None, "rows": 0}
    assert m["retention"]["lt14_spearman"] is None
    assert "retention.return_14d.auc" in m["notes"]
    assert m["throughput"] == {"train_samples_per_s": 10.0, "eval_samples_per_s": 20.0}
    assert lookup(m, "labels.like.gauc") == like["gauc"]


def test_compute_metrics_notes_reasons_for_one_class():
    preds = with_predictions(truth_frame(n_users=10, rows_per_user=5), noise=1.0).with_columns(
        like=pl.lit(0, dtype=pl.Int8), cold_item=pl.lit(False))
    m = compute_metrics(preds, ["like"], "valid")
    like = m["labels"]["like"]
    assert like["auc"] is None and like["gauc"] is None and like["auc_cold_item"] is None
    assert like["gauc_users"] == 0
    assert m["notes"]["labels.like.auc"] == "only one class (all 0)"
    assert m["notes"]["labels.like.gauc"] == "no user has both classes"
    assert m["notes"]["labels.like.auc_cold_item"] == "cold_item rows: no rows"
    assert like["gauc_cold_item"] is None and like["gauc_users_cold_item"] == 0
    assert m["notes"]["labels.like.gauc_cold_item"] == "cold_item rows: no rows"
    assert like["logloss"] is not None  # logloss is defined for one class
    assert m["throughput"] == {"train_samples_per_s": None, "eval_samples_per_s": None}
