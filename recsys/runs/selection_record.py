"""What a selection decision leaves in MLflow, and reading it back: the aliases it moves
(``champion``, ``previous-champion``), the version's ``selection.*`` tags, one run per decision
in the ``recsys-selection`` experiment with its report artifact, and the champion history those
runs make up (``recsys select --history``)."""

from __future__ import annotations

import time
from typing import Any

from mlflow import MlflowClient
from mlflow.utils.validation import MAX_TAG_VAL_LENGTH

from recsys.runs.tracking import client_for, ensure_experiment, resolve_tracking_uri

CHAMPION = "champion"
PREVIOUS = "previous-champion"
SELECTION_EXPERIMENT = "recsys-selection"
DECISION_TAG = "selection.decision"
DEMOTED_TAG = "selection.demoted_by"
REPORT_ARTIFACT = "selection_report.json"


def version_tags(d: dict[str, Any]) -> dict[str, str]:
    """The decision as ``selection.*`` tags of the model version: its scalar values, the
    guardrails' outcome and the A/B estimate (the whole decision is the run's artifact)."""
    tags = {f"selection.{k}": str(v) for k, v in d.items()
            if k != "version" and v is not None and isinstance(v, str | int | float | bool)}
    if d.get("guardrails"):
        tags["selection.guardrails"] = "; ".join(
            f"{g['metric']}: {'held' if g['held'] else 'failed'}" for g in d["guardrails"])
    if d.get("ab_test_estimate"):
        tags["selection.ab_users_per_arm_estimate"] = str(d["ab_test_estimate"]["users_per_arm"])
    return {k: v[:MAX_TAG_VAL_LENGTH] for k, v in tags.items()}


def record_decision(client: MlflowClient, model_name: str, d: dict[str, Any], params: dict[str, Any],
            uri: str) -> None:
    """Moves aliases for a promotion and writes the decision as version tags and one run."""
    version = d["version"]
    if d["decision"] in ("promoted", "initial"):
        client.set_registered_model_alias(model_name, CHAMPION, version)
        if d["champion_before"] is not None:
            client.set_registered_model_alias(model_name, PREVIOUS, d["champion_before"])
            # a demoted champion is decided: it must not come back as a challenger
            client.set_model_version_tag(model_name, d["champion_before"], DEMOTED_TAG, version)
    exp_id = ensure_experiment(client, SELECTION_EXPERIMENT, uri)
    tags = {"recsys.selection.model": model_name, "recsys.selection.version": version,
            "recsys.selection.decision": d["decision"],
            "recsys.selection.champion_before": str(d["champion_before"]),
            "recsys.selection.champion_after": d["champion_after"],
            "recsys.selection.champion_run_id": d.get("champion_run_id"),
            "recsys.selection.challenger_run_id": d.get("challenger_run_id"),
            "recsys.selection.round": str(d.get("round", 0)),
            "recsys.selection.seq": str(time.time_ns()),  # ms start times can tie
            "recsys.selection.reason": d["reason"][:MAX_TAG_VAL_LENGTH],
            "recsys.selection.decided_at": d["decided_at"],
            "mlflow.runName": f"{model_name}-v{version}-{d['decision']}"}
    if d.get("guardrails"):
        tags["recsys.selection.guardrails"] = version_tags(d)["selection.guardrails"]
    run = client.create_run(exp_id, tags={k: v for k, v in tags.items() if v is not None})
    run_id = run.info.run_id
    for k, v in params.items():
        client.log_param(run_id, k, v)
    for k in ("champion_metric", "challenger_metric", "gain", "gain_boot_mean", "ci_low",
              "ci_high", "p_value", "p_adjusted"):
        if d.get(k) is not None:
            client.log_metric(run_id, k, d[k])
    for g in d.get("guardrails") or ():
        for k in ("delta", "lower_bound", "p_value"):
            client.log_metric(run_id, f"guardrail.{g['metric']}.{k}", g[k])
    if d.get("ab_test_estimate"):
        client.log_metric(run_id, "ab_users_per_arm_estimate",
                          d["ab_test_estimate"]["users_per_arm"])
    d["selection_run_id"] = run_id
    client.log_dict(run_id, {"model": model_name, "rules": params, "decision": d},
                    REPORT_ARTIFACT)
    client.set_terminated(run_id, "FINISHED")
    for k, v in version_tags(d).items():
        client.set_model_version_tag(model_name, version, k, v)


def champion_history(model_name: str, tracking_uri: str | None = None) -> list[dict[str, Any]]:
    """Every recorded decision for ``model_name``, oldest first: who was champion when."""
    client = client_for(resolve_tracking_uri(tracking_uri))
    exp = client.get_experiment_by_name(SELECTION_EXPERIMENT)
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id],
                              filter_string=f"tags.`recsys.selection.model` = '{model_name}'",
                              max_results=50_000)
    out = []
    for r in runs:
        t = r.data.tags
        before = t.get("recsys.selection.champion_before")
        out.append({
            "seq": int(t.get("recsys.selection.seq", 0)),
            "decided_at": t.get("recsys.selection.decided_at"),
            "version": t.get("recsys.selection.version"),
            "decision": t.get("recsys.selection.decision"),
            "champion_before": None if before in (None, "None") else before,
            "champion_after": t.get("recsys.selection.champion_after"),
            "gain": r.data.metrics.get("gain"), "p_value": r.data.metrics.get("p_value"),
            "p_adjusted": r.data.metrics.get("p_adjusted"),
            "metric": r.data.params.get("metric"), "run_id": r.info.run_id,
            "champion_run_id": t.get("recsys.selection.champion_run_id"),
            "challenger_run_id": t.get("recsys.selection.challenger_run_id")})
    out.sort(key=lambda e: e["seq"])
    for e in out:
        del e["seq"]
    return out

