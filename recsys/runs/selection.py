"""A/B candidate selection over the versions of a registered model (MLflow aliases).

Rules (docs/evaluation.md §4):
- the version holding the ``champion`` alias is the reference; without one, the first
  (lowest) undecided version becomes champion;
- every undecided version (no ``selection.decision`` or ``selection.demoted_by`` tag) is a
  challenger; all of them are compared with the champion at once, on the same evaluation rows
  (``predictions/<split>.parquet`` of each version's run, joined on ``row_id``), by a paired
  bootstrap over users (``recsys.runs.selection_stats``), and their p-values are adjusted together
  by Holm's step-down method (one family per round);
- a challenger clears a round only when its gain is ≥ ``min_gain``, positive and significant
  after Holm (adjusted p < ``alpha``) and every guardrail metric holds (a non-inferiority
  test with a margin); of those that clear, the one with the largest gain is promoted
  (``champion`` moves to it, ``previous-champion`` to the old one) and the others that
  cleared meet it in the next round; the rest are kept;
- everything is decided before anything is written; then each decision is written as
  ``selection.*`` tags on the version and as one run in the ``recsys-selection`` experiment
  (both models' run ids as tags, the whole decision as ``selection_report.json``), which
  ``recsys.runs.selection_record.champion_history`` reads back (that module writes them).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from mlflow import MlflowClient
from mlflow.artifacts import download_artifacts
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from recsys.errors import UsageError
from recsys.runs.rundir import prediction_labels, utc_now
from recsys.runs.selection_record import (
    CHAMPION,
    DECISION_TAG,
    DEMOTED_TAG,
    record_decision,
)
from recsys.runs.selection_stats import (
    MetricSpec,
    ab_test_users,
    holm,
    non_inferiority,
    paired_bootstrap,
    parse_metric,
)
from recsys.runs.tracking import client_for, resolve_tracking_uri


def _versions(client: MlflowClient, model_name: str) -> list[ModelVersion]:
    try:
        client.get_registered_model(model_name)
    except MlflowException:
        raise UsageError(f"no registered model named '{model_name}'") from None
    found = client.search_model_versions(f"name = '{model_name}'")
    return sorted(found, key=lambda v: int(v.version))


def champion_version(client: MlflowClient, model_name: str, alias: str = CHAMPION) -> str | None:
    """The version holding ``alias`` (resolved with ``get_model_version_by_alias``: search
    results do not carry aliases), or None."""
    try:
        return str(client.get_model_version_by_alias(model_name, alias).version)
    except MlflowException:
        return None  # MLflow 3 answers INVALID_PARAMETER_VALUE for an unset alias


def _load_predictions(mv: ModelVersion, split: str, uri: str, tmp: Path) -> pl.DataFrame:
    if not mv.run_id:
        raise UsageError(f"version {mv.version} has no run: its predictions cannot be found")
    artifact = f"predictions/{split}.parquet"
    try:
        local = download_artifacts(run_id=mv.run_id, artifact_path=artifact,
                                   dst_path=str(tmp / f"v{mv.version}"), tracking_uri=uri)
    except (MlflowException, OSError) as exc:
        raise UsageError(f"version {mv.version}: run {mv.run_id} has no artifact {artifact} "
                         f"({type(exc).__name__})") from None
    # no memory map: the temporary download directory is removed right after
    return pl.read_parquet(local, memory_map=False).sort("row_id")


def _check_same_rows(frames: dict[str, pl.DataFrame], ref: str, truths: Sequence[str]) -> None:
    """Refuses versions evaluated on other rows: a paired comparison needs the same rows and
    the same truths (of the selection metric and of every guardrail)."""
    base = frames[ref]
    problems = []
    for version, df in frames.items():
        if version == ref:
            continue
        if df.height != base.height or not df["row_id"].equals(base["row_id"]):
            problems.append(f"version {version} was evaluated on other rows than version {ref} "
                            f"({df.height} vs {base.height} rows, or different row_id)")
            continue
        for truth in dict.fromkeys(truths):
            if not df[truth].equals(base[truth]):
                problems.append(f"version {version}: column '{truth}' differs from version "
                                f"{ref} on the same row_id (different evaluation data?)")
    if problems:
        raise UsageError(problems)


def _arrays(spec: MetricSpec, ref: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row mask, truths, users) of the rows the metric is computed on."""
    mask = ref[spec.head].is_not_null()  # censored retention rows are left out
    if spec.subset:
        mask = mask & ref[spec.subset].fill_null(False)
    sub = ref.filter(mask)
    user_col = "user_id" if "user_id" in ref.columns else "user_key"
    # raw user ids are stable across runs; user_key is a per-run dense id
    return mask.to_numpy(), sub[spec.head].to_numpy(), sub[user_col].to_numpy()


def parse_guardrails(items: Sequence[str], margin: float | None = None) -> list[tuple[str, float]]:
    """``[(metric path, margin)]`` of ``--guardrail METRIC`` / ``METRIC:MARGIN`` (the default
    margin is ``margin``, ``--guardrail-margin``); UsageError naming every bad one."""
    out: dict[str, float] = {}
    problems = []
    for item in items:
        path, sep, text = item.rpartition(":")
        if not sep:
            path, text = item, None
        if text is None and margin is None:
            problems.append(f"--guardrail {item}: no margin; give {item}:MARGIN or "
                            "--guardrail-margin")
            continue
        try:
            value = float(text) if text is not None else float(margin)
        except ValueError:
            problems.append(f"--guardrail {item}: margin '{text}' is not a number")
            continue
        if not (math.isfinite(value) and value >= 0):
            problems.append(f"--guardrail {item}: the margin must be a number ≥ 0, got {value}")
        elif path in out:
            problems.append(f"--guardrail {path} is given twice")
        else:
            out[path] = value
    if problems:
        raise UsageError(problems)
    return list(out.items())


def _guardrail_reason(g: dict[str, Any]) -> str:
    side = "better" if g["delta"] >= 0 else "worse"
    what = (f"{g['metric']}: challenger {side} by {abs(g['delta']):.4g} "
            f"({g['champion']:.4g} → {g['challenger']:.4g}), one-sided {1 - g['alpha']:.0%} "
            f"bound {g['lower_bound']:+.4g} against the margin -{g['margin']:g}, "
            f"p = {g['p_value']:.3g}")
    if g["held"]:
        return f"{what}: held"
    return f"{what}: failed (a loss of {g['margin']:g} or more is not ruled out)"


def _decide(res: dict[str, Any], min_gain: float, alpha: float) -> tuple[str, str]:
    """("promoted" | "kept", why) of one comparison; ``p`` is Holm's adjusted p-value when the
    challenger was one of several (``p_adjusted``), else its own."""
    gain, p = res["gain"], res.get("p_adjusted", res["p_value"])
    if gain <= 0:
        return "kept", f"gain {gain:.6g} is not positive"
    if gain < min_gain:
        return "kept", f"gain {gain:.6g} is below the minimum {min_gain:g}"
    if p >= alpha:
        return "kept", f"not significant (p = {p:.4g} ≥ alpha = {alpha:g})"
    failed = [g["metric"] for g in res.get("guardrails") or () if not g["held"]]
    if failed:
        return "kept", f"guardrail failed: {', '.join(failed)}"
    return "promoted", f"gain {gain:.6g} ≥ {min_gain:g} and p = {p:.4g} < {alpha:g}"


def _explain(res: dict[str, Any], decision: str, reason: str) -> str:
    """The decision's reason with Holm's step (when there were several challengers) and the
    guardrails' outcome."""
    h = res.get("holm") or {}
    if h.get("family", 1) > 1:
        reason += (f"; Holm over {h['family']} challengers: raw p = {res['p_value']:.4g} ranks "
                   f"{h['rank']}, adjusted p = {h['p_adjusted']:.4g}")
    guards = res.get("guardrails") or []
    held = [g["metric"] for g in guards if g["held"]]
    failed = [g["metric"] for g in guards if not g["held"]]
    if decision == "promoted" and held:
        reason += f"; guardrails held: {', '.join(held)}"
    elif failed and not reason.startswith("guardrail failed"):
        reason += f"; guardrail failed too: {', '.join(failed)}"
    return reason


class _Comparer:
    """Paired comparisons of versions on the rows of the selection metric and the guardrails."""

    def __init__(self, frames: dict[str, pl.DataFrame], ref: pl.DataFrame, spec: MetricSpec,
                 guardrails: list[tuple[MetricSpec, float]], n_boot: int, seed: int,
                 alpha: float, power: float) -> None:
        self.frames, self.spec, self.guardrails = frames, spec, guardrails
        self.n_boot, self.seed, self.alpha, self.power = n_boot, seed, alpha, power
        self.arrays = {s.path: _arrays(s, ref) for s in [spec, *(g for g, _ in guardrails)]}

    def _scores(self, spec: MetricSpec, version: str) -> np.ndarray:
        return self.frames[version][f"pred_{spec.head}"].to_numpy()[self.arrays[spec.path][0]]

    def __call__(self, champion: str, challenger: str) -> dict[str, Any]:
        spec = self.spec
        _, y, users = self.arrays[spec.path]
        try:
            boot = paired_bootstrap(spec, y, self._scores(spec, champion),
                                    self._scores(spec, challenger), users, n_boot=self.n_boot,
                                    seed=self.seed, alpha=self.alpha)
            guards = []
            for g, margin in self.guardrails:
                _, gy, gusers = self.arrays[g.path]
                guards.append(non_inferiority(
                    g, gy, self._scores(g, champion), self._scores(g, challenger), gusers,
                    margin, n_boot=self.n_boot, seed=self.seed, alpha=self.alpha).to_dict())
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        res = boot.to_dict()
        res["champion_metric"] = res.pop("champion")
        res["challenger_metric"] = res.pop("challenger")
        res["guardrails"] = [{**g, "reason": _guardrail_reason(g)} for g in guards]
        res["ab_test_estimate"] = ab_test_users(boot, self.alpha, self.power)
        return res


def _round(compare: _Comparer, champion: str, challengers: list[str], min_gain: float,
           alpha: float) -> tuple[dict[str, dict[str, Any]], str | None]:
    """Compares every challenger with ``champion`` at once; Holm's adjustment over them.
    Returns ({version: result with decision and reason}, the winner among those that cleared,
    the largest gain, the lower version on a tie)."""
    results = {v: compare(champion, v) for v in challengers}
    raw = [results[v]["p_value"] for v in challengers]
    order = sorted(range(len(raw)), key=lambda i: raw[i])  # holm()'s order, ties as given
    m = len(challengers)
    for i, (v, p_adj) in enumerate(zip(challengers, holm(raw), strict=True)):
        rank = order.index(i) + 1
        results[v]["p_adjusted"] = p_adj
        results[v]["holm"] = {"family": m, "rank": rank, "step_threshold": alpha / (m - rank + 1),
                              "p_adjusted": p_adj, "significant": p_adj < alpha}
        decision, reason = _decide(results[v], min_gain, alpha)
        results[v]["decision"], results[v]["reason"] = decision, _explain(results[v], decision,
                                                                          reason)
    cleared = [v for v in challengers if results[v]["decision"] == "promoted"]
    winner = max(cleared, key=lambda v: (results[v]["gain"], -int(v))) if cleared else None
    return results, winner


def select(model_name: str, metric: str | None = None, min_gain: float = 0.0,
           alpha: float = 0.05, dry_run: bool = False, tracking_uri: str | None = None,
           n_boot: int = 1000, seed: int = 0, split: str = "test",
           guardrails: Sequence[str] = (), guardrail_margin: float | None = None,
           ab_power: float = 0.8) -> dict[str, Any]:
    """Judges every undecided version of ``model_name`` against the champion (module doc).

    ``metric`` defaults to ``labels.<primary>.gauc`` (primary = first label head of the
    predictions). ``guardrails`` are metric paths, each ``METRIC`` or ``METRIC:MARGIN``
    (``guardrail_margin`` is the margin of those without one). ``ab_power`` is the power of
    the A/B size estimate. With ``dry_run`` nothing is written. Returns a JSON-able report
    with one entry per decision, in the order they were made. Raises ``UsageError`` for a
    missing model, metric or predictions, a bad guardrail, and for versions evaluated on
    different rows (before anything is changed).
    """
    if not 0 < alpha < 1:
        raise UsageError(f"--alpha must be in (0, 1), got {alpha}")
    if n_boot < 1:
        raise UsageError(f"--n-boot must be ≥ 1, got {n_boot}")
    if not 0 < ab_power < 1:
        raise UsageError(f"--ab-power must be in (0, 1), got {ab_power}")
    guard_args = parse_guardrails(guardrails, guardrail_margin)
    uri = resolve_tracking_uri(tracking_uri)
    client = client_for(uri)
    versions = _versions(client, model_name)
    champion = champion_version(client, model_name)
    pending = [str(v.version) for v in versions if str(v.version) != champion
               and DECISION_TAG not in v.tags and DEMOTED_TAG not in v.tags]
    report: dict[str, Any] = {
        "model": model_name, "metric": metric, "split": split, "min_gain": min_gain,
        "alpha": alpha, "correction": "holm", "n_boot": n_boot, "seed": seed,
        "guardrails": [{"metric": m, "margin": g} for m, g in guard_args],
        "ab_power": ab_power, "dry_run": dry_run, "tracking_uri": uri,
        "champion_before": champion, "champion_after": champion, "notes": [],
        "decisions": []}
    if not pending:
        return report
    by_version = {str(v.version): v for v in versions}
    involved = ([champion] if champion else []) + pending
    with tempfile.TemporaryDirectory() as tmp:
        frames = {v: _load_predictions(by_version[v], split, uri, Path(tmp)) for v in involved}
    ref = frames[involved[0]]
    metric = metric or f"labels.{(prediction_labels(ref) or ['?'])[0]}.gauc"
    report["metric"] = metric
    try:
        spec = parse_metric(metric, ref.columns)
        guard_specs = [(parse_metric(m, ref.columns), g) for m, g in guard_args]
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    _check_same_rows(frames, involved[0], [spec.head, *(g.head for g, _ in guard_specs)])
    compare = _Comparer(frames, ref, spec, guard_specs, n_boot, seed, alpha, ab_power)
    params = {"model": model_name, "metric": metric, "split": split, "min_gain": min_gain,
              "alpha": alpha, "correction": "holm", "n_boot": n_boot, "seed": seed,
              "guardrails": ", ".join(f"{m}:{g:g}" for m, g in guard_args) or "none"}

    def entry(version: str, compared_with: str | None, round_no: int) -> dict[str, Any]:
        return {"version": version, "compared_with": compared_with,
                "champion_before": compared_with, "round": round_no,
                "champion_run_id": by_version[compared_with].run_id if compared_with else None,
                "challenger_run_id": by_version[version].run_id, "decided_at": utc_now()}

    decisions = []
    current, queue = champion, list(pending)
    if current is None:
        current = queue.pop(0)
        decisions.append({**entry(current, None, 0), "decision": "initial",
                          "reason": "no champion yet: the first candidate becomes it",
                          "champion_after": current})
    earlier: dict[str, list[dict[str, Any]]] = {}
    round_no = 0
    while queue:
        round_no += 1
        if 2 / (n_boot + 1) >= alpha / len(queue):
            report["notes"].append(
                f"round {round_no}: with --n-boot {n_boot} the smallest possible p-value "
                f"({2 / (n_boot + 1):.3g}) is not below Holm's first step alpha/{len(queue)} "
                f"= {alpha / len(queue):.3g}: no challenger can be promoted; raise --n-boot")
        results, winner = _round(compare, current, queue, min_gain, alpha)
        next_queue = []
        for v in queue:
            d = {**entry(v, current, round_no), **results[v],
                 "earlier_rounds": earlier.pop(v, [])}
            if d["decision"] == "promoted" and v != winner:
                # cleared, but the winner gained more: it meets the winner next round
                earlier[v] = d["earlier_rounds"] + [
                    {k: d[k] for k in ("round", "compared_with", "gain", "p_value",
                                       "p_adjusted", "reason")}
                    | {"outcome": f"cleared; version {winner} gained more"}]
                next_queue.append(v)
                continue
            d["champion_after"] = winner or current
            decisions.append(d)
        current, queue = winner or current, next_queue

    if not dry_run:
        for d in decisions:
            record_decision(client, model_name, d, params, uri)
    report["decisions"] = decisions
    report["champion_after"] = current
    return report
