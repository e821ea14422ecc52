"""Candidate selection: the paired bootstrap's numbers, and the decisions on a real MLflow
SQLite store where the right answer is known by construction."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from mlflow import MlflowClient
from mlflow.artifacts import download_artifacts
from scipy.stats import norm

from recsys.commands import select_cmd
from recsys.errors import UsageError
from recsys.evaluation.metrics import auc, gauc, logloss
from recsys.runs.selection import champion_version, parse_guardrails, select
from recsys.runs.selection_record import champion_history
from recsys.runs.selection_stats import (
    MetricSpec,
    _multiplicities,
    _replicate_fn,
    ab_test_users,
    holm,
    paired_bootstrap,
    parse_metric,
)
from recsys.runs.tracking import track_run
from tests.recsys.run_fixtures import make_run, truth_frame, with_predictions

GAUC = MetricSpec("labels.like.gauc", "like", "gauc")


def _binormal(rng, users, rows, mu_a, mu_b, rho=0.5):
    """Per-row labels and two correlated scores whose per-user AUCs are Φ(μ/√2) exactly in
    expectation (positives ~ N(μ, 1), negatives ~ N(0, 1))."""
    n = users * rows
    y = (rng.random(n) < 0.4).astype(np.int8)
    e1, e2 = rng.normal(size=(2, n))
    return (y, mu_a * y + e1, mu_b * y + rho * e1 + np.sqrt(1 - rho**2) * e2,
            np.repeat(np.arange(users), rows))


def test_bootstrap_interval_covers_the_true_difference():
    true_gain = norm.cdf(0.9 / np.sqrt(2)) - norm.cdf(0.6 / np.sqrt(2))
    rng = np.random.default_rng(0)
    covered, sims = 0, 60
    for s in range(sims):
        y, pa, pb, users = _binormal(rng, users=150, rows=10, mu_a=0.6, mu_b=0.9)
        res = paired_bootstrap(GAUC, y, pa, pb, users, n_boot=300, seed=s)
        covered += res.ci_low <= true_gain <= res.ci_high
        if s == 0:
            assert res.ci_level == pytest.approx(0.95)
            assert res.gain == pytest.approx(gauc(y, pb, users)[0] - gauc(y, pa, users)[0])
            assert res.ci_low <= res.gain_boot_mean <= res.ci_high
    assert covered / sims >= 0.85  # nominal 0.95; 0.85 is > 3 sd below it for 60 runs


def test_identical_models_give_zero_gain_and_p_one():
    y, pa, _, users = _binormal(np.random.default_rng(1), 50, 8, 1.0, 1.0)
    res = paired_bootstrap(GAUC, y, pa, pa.copy(), users, n_boot=200)
    assert res.gain == 0 and res.ci_low == 0 == res.ci_high and res.p_value == 1.0


@pytest.mark.parametrize("kind", ["gauc", "auc", "logloss"])
def test_replicates_equal_the_metric_on_materialised_resamples(kind):
    """A replicate with multiplicities c must equal the metric recomputed on the rows of the
    resampled users, each copy of a user being a separate user."""
    rng = np.random.default_rng(3)
    y, p, _, users = _binormal(rng, 40, 6, 1.0, 1.0)
    p = np.round(1 / (1 + np.exp(-p)), 2)  # probabilities with ties
    _, fn = _replicate_fn(MetricSpec("m", "like", kind), y, p, users, 40)
    c = _multiplicities(rng, 40, 5)
    assert (c.sum(axis=1) == 40).all()
    got = fn(c.astype(float))
    for b in range(5):
        idx, groups = [], []
        for u in range(40):
            for copy in range(c[b, u]):
                idx.append(np.flatnonzero(users == u))
                groups.append(np.full(6, u * 100 + copy))
        idx, groups = np.concatenate(idx), np.concatenate(groups)
        if kind == "gauc":
            want = gauc(y[idx], p[idx], groups)[0]
        else:
            want = (auc if kind == "auc" else logloss)(y[idx], p[idx])
        assert got[b] == pytest.approx(want, abs=1e-12)


def test_parse_metric_accepts_and_refuses():
    cols = ["like", "pred_like", "cold_item", "return_7d", "pred_return_7d"]
    assert parse_metric("labels.like.auc_cold_item", cols).subset == "cold_item"
    assert not parse_metric("labels.like.logloss", cols).higher_is_better
    assert parse_metric("retention.return_7d.auc", cols).head == "return_7d"
    for bad in ("labels.like.f1", "labels.click.gauc", "retention.lt7_spearman", "x"):
        with pytest.raises(ValueError):
            parse_metric(bad, cols)


@pytest.fixture(scope="module")
def truth():
    return truth_frame(n_users=150, rows_per_user=20, seed=5)


def _register(tmp_path, store, model, name, preds):
    result = track_run(make_run(tmp_path, name, preds, model_name=model, epochs=1), store)
    assert result.synced
    return result.model_version


def _cli(argv):
    parser = argparse.ArgumentParser(prog="recsys")
    select_cmd.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_selection_promotes_only_a_significant_winner(tmp_path, store, truth, capsys):
    base = with_predictions(truth, noise=2.5, seed=1)
    winner = with_predictions(truth, noise=0.5, seed=2)
    for name, preds in (("v1-base", base), ("v2-winner", winner), ("v3-tie", winner),
                        ("v4-worse", with_predictions(truth, noise=5.0, seed=3))):
        _register(tmp_path, store, "ctr", name, preds)

    dry = select("ctr", tracking_uri=store, n_boot=300, dry_run=True)
    client = MlflowClient(store)
    assert champion_version(client, "ctr") is None and champion_history("ctr", store) == []

    assert _cli(["select", "--model", "ctr", "--tracking-uri", store, "--n-boot", "300"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["metric"] == "labels.like.gauc" and report["champion_after"] == "2"
    # 2, 3 and 4 meet champion 1 at once (round 1); 2 and 3 (the same predictions) both clear
    # it, 2 wins the tie as the older version, and 3 meets 2 in round 2
    assert [(d["version"], d["decision"], d["compared_with"], d["round"])
            for d in report["decisions"]] == [
        ("1", "initial", None, 0), ("2", "promoted", "1", 1), ("4", "kept", "1", 1),
        ("3", "kept", "2", 2)]
    assert [d["decision"] for d in dry["decisions"]] == ["initial", "promoted", "kept", "kept"]
    v2, v4, v3 = report["decisions"][1:]
    assert v2["gain"] > 0.02 and v2["ci_low"] > 0 and v2["p_value"] < 0.05
    assert v2["holm"]["family"] == 3 and v2["p_adjusted"] < 0.05
    assert v3["gain"] == 0 and v3["p_value"] == 1.0  # a tie is not promoted
    assert [e["compared_with"] for e in v3["earlier_rounds"]] == ["1"]  # it had cleared round 1
    assert v4["gain"] < 0 and v4["ci_high"] < 0  # a worse one is not promoted
    metrics = json.loads((tmp_path / "v2-winner" / "metrics.json").read_text())
    assert v2["challenger_metric"] == pytest.approx(metrics["labels"]["like"]["gauc"], abs=1e-12)

    assert champion_version(client, "ctr") == "2"
    assert champion_version(client, "ctr", "previous-champion") == "1"
    assert client.get_model_version("ctr", "3").tags["selection.decision"] == "kept"
    history = champion_history("ctr", store)
    assert [(h["version"], h["champion_after"]) for h in history] == [
        ("1", "1"), ("2", "2"), ("4", "2"), ("3", "2")]

    # everything is decided: a second call changes nothing
    assert select("ctr", tracking_uri=store, n_boot=300)["decisions"] == []
    # a new candidate is compared with the current champion
    _register(tmp_path, store, "ctr", "v5-best", with_predictions(truth, noise=0.0, seed=4))
    later = select("ctr", tracking_uri=store, n_boot=300, min_gain=0.5)
    assert later["decisions"][0]["compared_with"] == "2"
    assert later["decisions"][0]["decision"] == "kept" and "below the minimum" in \
        later["decisions"][0]["reason"]
    assert _cli(["select", "--model", "ctr", "--history", "--tracking-uri", store]) == 0
    assert len(json.loads(capsys.readouterr().out)["history"]) == 5


def test_selection_refuses_different_rows_and_bad_metrics(tmp_path, store, truth):
    preds = with_predictions(truth, noise=1.0)
    _register(tmp_path, store, "rank", "a", preds)
    _register(tmp_path, store, "rank", "b", preds.filter(pl.col("row_id") % 10 != 0))
    with pytest.raises(UsageError, match="other rows"):
        select("rank", tracking_uri=store, n_boot=50)
    client = MlflowClient(store)
    assert champion_version(client, "rank") is None  # refused before anything changed
    with pytest.raises(UsageError, match="not selectable"):
        select("rank", metric="labels.like.f1", tracking_uri=store)
    with pytest.raises(UsageError, match="no registered model"):
        select("missing", tracking_uri=store)


def test_selection_on_retention_auc_uses_uncensored_rows(tmp_path, store, truth):
    for name, noise in (("a", 3.0), ("b", 0.3)):
        _register(tmp_path, store, "ret", name, with_predictions(truth, noise=noise))
    report = select("ret", metric="retention.return_7d.auc", tracking_uri=store, n_boot=200,
                    dry_run=True)
    d = report["decisions"][1]
    uncensored = truth.filter(pl.col("return_7d").is_not_null())
    assert d["rows"] == uncensored.height < truth.height
    assert d["decision"] == "promoted"


def test_a_positive_gain_that_is_not_significant_is_kept(tmp_path, store, truth):
    """Two equally noisy models: the second's gain on these rows is positive by chance. The
    p-value alone keeps it out; with a looser alpha the same gain is promoted."""
    _register(tmp_path, store, "ab", "base", with_predictions(truth, noise=2.5, seed=1))
    _register(tmp_path, store, "ab", "lucky", with_predictions(truth, noise=2.5, seed=11))
    strict = select("ab", tracking_uri=store, n_boot=300, dry_run=True)["decisions"][1]
    assert strict["gain"] > 0  # positive, so above the default min_gain of 0
    assert 0.05 <= strict["p_value"] < 0.5, strict
    assert strict["decision"] == "kept" and "not significant" in strict["reason"]
    assert strict["champion_after"] == "1"
    loose = select("ab", tracking_uri=store, n_boot=300, dry_run=True, alpha=0.5)["decisions"][1]
    assert loose["p_value"] == strict["p_value"]
    assert loose["decision"] == "promoted" and loose["champion_after"] == "2"


def test_selection_refuses_the_same_rows_with_different_truths(tmp_path, store, truth):
    preds = with_predictions(truth, noise=1.0)
    _register(tmp_path, store, "truths", "a", preds)
    # The same row_ids, but five rows' labels flipped: another evaluation log.
    flipped = preds.with_columns(
        pl.when(pl.col("row_id") < 5).then(1 - pl.col("like")).otherwise(pl.col("like"))
        .cast(pl.Int8).alias("like"))
    _register(tmp_path, store, "truths", "b", flipped)
    with pytest.raises(UsageError, match="column 'like' differs from version 1 on the same row_id"):
        select("truths", tracking_uri=store, n_boot=50)
    assert champion_version(MlflowClient(store), "truths") is None  # nothing changed


def test_equally_good_models_are_promoted_at_a_rate_of_at_most_alpha():
    """Under the null (challenger and champion equally good, independent noise) the rule
    promotes at most alpha of the time; about half of the pairs have a positive gain by chance,
    so a rule on the gain's sign alone would promote near 50%."""
    from recsys.runs.selection import _decide

    rng = np.random.default_rng(7)
    sims, alpha = 200, 0.05
    promoted = positive = 0
    for s in range(sims):
        y, pa, _, users = _binormal(rng, users=100, rows=10, mu_a=0.8, mu_b=0.8)
        pb = 0.8 * y + rng.normal(size=y.size)  # as good as pa, its own noise
        res = paired_bootstrap(GAUC, y, pa, pb, users, n_boot=200, seed=s).to_dict()
        positive += res["gain"] > 0
        promoted += _decide(res, min_gain=0.0, alpha=alpha)[0] == "promoted"
    assert positive / sims > 0.35, positive
    # Expected ≈ alpha / 2 (one side of a two-sided test): 5 of 200; 10 is alpha.
    assert promoted / sims <= alpha, promoted


# --- guardrails, Holm's correction, the A/B size estimate (issue 26) --------------------------

def _sharpened(preds: pl.DataFrame, k: float) -> pl.DataFrame:
    """The same ranking with every logit multiplied by ``k``: GAUC and AUC unchanged,
    calibration (logloss) worse."""
    p = preds["pred_like"].to_numpy().astype(np.float64)
    logit = k * np.log(p / (1 - p))
    return preds.with_columns(pred_like=pl.Series((1 / (1 + np.exp(-logit))).astype(np.float32)))


GUARDS = ["labels.like.logloss", "retention.return_7d.auc"]


def test_a_gain_with_a_failing_guardrail_is_not_promoted(tmp_path, store, truth):
    base = with_predictions(truth, noise=1.0, seed=1)
    better = with_predictions(truth, noise=0.5, seed=2)  # better ranking, calibration, retention
    overconfident = _sharpened(better, 2.0)  # the same GAUC gain, worse logloss
    _register(tmp_path, store, "cal", "base", base)
    _register(tmp_path, store, "cal", "overconfident", overconfident)
    plain = select("cal", tracking_uri=store, n_boot=300, dry_run=True)["decisions"][1]
    assert plain["decision"] == "promoted" and plain["gain"] > 0.02  # without guardrails

    guarded = select("cal", tracking_uri=store, n_boot=300, dry_run=True, guardrails=GUARDS,
                     guardrail_margin=0.002)["decisions"][1]
    assert guarded["gain"] == plain["gain"] and guarded["p_value"] < 0.05
    assert guarded["decision"] == "kept" and guarded["champion_after"] == "1"
    assert guarded["reason"] == "guardrail failed: labels.like.logloss"
    logloss, ret = guarded["guardrails"]
    assert logloss["metric"] == "labels.like.logloss" and logloss["margin"] == 0.002
    # lower is better for logloss: the challenger's is higher, so its delta is negative
    assert logloss["challenger"] > logloss["champion"] + 0.002 and logloss["delta"] < -0.002
    assert not logloss["held"] and logloss["p_value"] >= 0.05 and logloss["lower_bound"] < -0.002
    assert logloss["reason"].endswith("failed (a loss of 0.002 or more is not ruled out)")
    assert ret["held"] and ret["delta"] > 0 and ret["reason"].endswith(": held")


def test_guardrails_holding_let_the_gain_through_and_the_report_says_which(
        tmp_path, store, truth, capsys):
    base = with_predictions(truth, noise=1.0, seed=1)
    better = with_predictions(truth, noise=0.5, seed=2)
    worse_retention = better.with_columns(
        pred_return_7d=with_predictions(truth, noise=3.0, seed=9)["pred_return_7d"])
    for name, preds in (("base", base), ("overconfident", _sharpened(better, 2.0)),
                        ("forgets-retention", worse_retention), ("better", better)):
        _register(tmp_path, store, "guard", name, preds)
    assert _cli(["select", "--model", "guard", "--tracking-uri", store, "--n-boot", "300",
                 "--guardrail", "labels.like.logloss",
                 "--guardrail", "retention.return_7d.auc:0.005",
                 "--guardrail-margin", "0.002"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["guardrails"] == [{"metric": "labels.like.logloss", "margin": 0.002},
                                    {"metric": "retention.return_7d.auc", "margin": 0.005}]
    decisions = {d["version"]: d for d in report["decisions"]}
    assert report["champion_after"] == "4"
    assert {v: d["decision"] for v, d in decisions.items()} == {
        "1": "initial", "2": "kept", "3": "kept", "4": "promoted"}
    # the three challengers' gains are equal (the same ranking) and all significant after Holm
    assert decisions["2"]["gain"] == decisions["3"]["gain"] == decisions["4"]["gain"] > 0
    assert all(decisions[v]["p_adjusted"] < 0.05 for v in "234")
    assert decisions["2"]["reason"].startswith("guardrail failed: labels.like.logloss")
    assert decisions["3"]["reason"].startswith("guardrail failed: retention.return_7d.auc")
    assert [g["held"] for g in decisions["3"]["guardrails"]] == [True, False]
    assert [g["held"] for g in decisions["4"]["guardrails"]] == [True, True]
    assert decisions["4"]["reason"].endswith(
        "guardrails held: labels.like.logloss, retention.return_7d.auc")

    # recorded: version tags, and a selection run with both models' run ids and the report
    client = MlflowClient(store)
    assert champion_version(client, "guard") == "4"
    tags = client.get_model_version("guard", "2").tags
    assert tags["selection.decision"] == "kept"
    assert tags["selection.guardrails"] == ("labels.like.logloss: failed; "
                                            "retention.return_7d.auc: held")
    v1, v4 = client.get_model_version("guard", "1"), client.get_model_version("guard", "4")
    run = client.get_run(decisions["4"]["selection_run_id"])
    assert run.data.tags["recsys.selection.champion_run_id"] == v1.run_id
    assert run.data.tags["recsys.selection.challenger_run_id"] == v4.run_id
    assert run.data.params["guardrails"] == ("labels.like.logloss:0.002, "
                                             "retention.return_7d.auc:0.005")
    assert run.data.metrics["guardrail.labels.like.logloss.p_value"] < 0.05
    saved = json.loads(Path(download_artifacts(run_id=run.info.run_id,
                                               artifact_path="selection_report.json",
                                               dst_path=str(tmp_path / "dl"),
                                               tracking_uri=store)).read_text())
    assert saved["decision"]["gain"] == decisions["4"]["gain"]
    assert saved["decision"]["ci_low"] == decisions["4"]["ci_low"]
    assert [g["metric"] for g in saved["decision"]["guardrails"]] == GUARDS
    assert saved["rules"]["alpha"] == 0.05 and saved["rules"]["correction"] == "holm"
    history = champion_history("guard", store)
    assert history[-1]["challenger_run_id"] == v4.run_id


def test_guardrail_options_are_checked():
    with pytest.raises(UsageError, match="no margin"):
        parse_guardrails(["labels.like.logloss"])
    assert parse_guardrails(["labels.like.logloss", "retention.return_7d.auc:0.01"], 0.002) == [
        ("labels.like.logloss", 0.002), ("retention.return_7d.auc", 0.01)]
    for bad, match in ((["labels.like.logloss:-1"], "≥ 0"), (["labels.like.logloss:x"],
                       "not a number"), (["labels.like.auc:0", "labels.like.auc:1"], "twice")):
        with pytest.raises(UsageError, match=match):
            parse_guardrails(bad)


def test_holm_step_down_by_hand():
    """m = 4: sorted 0.005, 0.01, 0.03, 0.04 against alpha/4, alpha/3, alpha/2, alpha/1. The
    third fails (0.03 ≥ 0.025), so the fourth is kept although 0.04 < 0.05 = its own step."""
    p = [0.01, 0.04, 0.03, 0.005]
    adjusted = holm(p)
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert [a < 0.05 for a in adjusted] == [True, False, False, True]
    assert holm([0.2]) == [0.2] and holm([]) == []
    assert holm([0.6, 0.3]) == [0.6, 0.6]  # monotone in the sorted order
    assert holm([0.5, 0.5, 0.5]) == [1.0, 1.0, 1.0]  # capped at 1


def test_holm_keeps_challengers_that_pass_alpha_alone(tmp_path, store, truth):
    """Two modest challengers, each significant at 5% on its own (p ≈ 0.030 and 0.042 against
    the champion), judged together: the smaller p-value needs < alpha/2 and fails, and the
    step-down stops there, so the other is kept although 0.042 < alpha = its own step's
    threshold. A strong third challenger passes the first step and is promoted."""
    base = with_predictions(truth, noise=2.5, seed=1)
    modest_a = with_predictions(truth, noise=2.0, seed=20)
    modest_b = with_predictions(truth, noise=2.0, seed=31)
    for name, preds in (("base", base), ("modest-a", modest_a)):
        _register(tmp_path / "alone", store, "alone", name, preds)
    alone = select("alone", tracking_uri=store, n_boot=1000, dry_run=True)["decisions"][1]
    assert 0.025 < alone["p_value"] < 0.05 and alone["decision"] == "promoted"
    assert alone["holm"]["family"] == 1 and alone["p_adjusted"] == alone["p_value"]

    for name, preds in (("base", base), ("modest-a", modest_a), ("modest-b", modest_b)):
        _register(tmp_path / "pair", store, "pair", name, preds)
    pair = {d["version"]: d for d in select("pair", tracking_uri=store, n_boot=1000,
                                            dry_run=True)["decisions"]}
    a, b = pair["2"], pair["3"]
    assert a["p_value"] == alone["p_value"] and a["p_value"] < b["p_value"] < 0.05
    assert a["holm"]["rank"] == 1 and a["holm"]["step_threshold"] == 0.025
    assert b["holm"]["rank"] == 2 and b["holm"]["step_threshold"] == 0.05
    assert a["p_adjusted"] == pytest.approx(2 * a["p_value"]) and a["p_adjusted"] >= 0.05
    assert b["p_adjusted"] == a["p_adjusted"]  # step-down: it cannot pass once a failed
    assert a["decision"] == b["decision"] == "kept"
    assert "not significant" in b["reason"] and "Holm over 2 challengers" in b["reason"]

    strong = with_predictions(truth, noise=0.5, seed=2)
    for name, preds in (("base", base), ("modest-a", modest_a), ("modest-b", modest_b),
                        ("strong", strong)):
        _register(tmp_path / "trio", store, "trio", name, preds)
    trio = {d["version"]: d for d in select("trio", tracking_uri=store, n_boot=1000,
                                            dry_run=True)["decisions"]}
    assert [trio[v]["holm"]["rank"] for v in "234"] == [2, 3, 1]
    assert trio["4"]["decision"] == "promoted" and trio["4"]["p_adjusted"] < 0.05
    assert trio["2"]["decision"] == trio["3"]["decision"] == "kept"
    assert trio["2"]["p_adjusted"] == pytest.approx(2 * trio["2"]["p_value"])


def test_ab_size_estimate_gives_the_power_it_promises():
    """The estimate n per arm, simulated as an A/B test (n users per arm drawn from the
    offline users, each arm sees one model): the difference's spread at n users per arm makes
    the offline gain detectable with the promised power (80%) at alpha, within sampling."""
    rng = np.random.default_rng(4)
    y, pa, pb, users = _binormal(rng, users=400, rows=10, mu_a=0.8, mu_b=1.0)
    res = paired_bootstrap(GAUC, y, pa, pb, users, n_boot=400, seed=0)
    est = ab_test_users(res, alpha=0.05, power=0.8)
    assert est["is_estimate"] and "estimate" in est["note"]
    n = est["users_per_arm"]
    assert est["users_total"] == 2 * n and 50 < n < 100_000
    _, fa = _replicate_fn(GAUC, y, pa, users, 400)
    _, fb = _replicate_fn(GAUC, y, pb, users, 400)
    sims = 400

    def arm():
        draws = rng.integers(0, 400, size=(sims, n)) + 400 * np.arange(sims)[:, None]
        return np.bincount(draws.ravel(), minlength=sims * 400).reshape(sims, 400).astype(float)

    diff = fb(arm()) - fa(arm())
    z = norm.ppf(0.975)
    power = np.mean(diff / diff.std() > z)  # the test at the spread the A/B would have
    assert 0.7 <= power <= 0.9, (n, power)
    assert ab_test_users(paired_bootstrap(GAUC, y, pb, pa, users, n_boot=100), 0.05) is None
