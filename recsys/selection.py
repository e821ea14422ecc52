"""A/B candidate selection over the versions of a registered model (MLflow aliases).

Rules (docs/evaluation.md):
- the version holding the ``champion`` alias is the reference; without one, the first
  (lowest) undecided version becomes champion;
- every undecided version (no ``selection.decision`` or ``selection.demoted_by`` tag), in version order, is a challenger
  and is compared with the champion of that moment on the same evaluation rows
  (``predictions/<split>.parquet`` of each version's run, joined on ``row_id``) by a paired
  bootstrap over users (``recsys.selection_stats``);
- it is promoted only when the gain is ≥ ``min_gain``, positive and significant
  (p < ``alpha``); promotion moves ``champion`` to it and ``previous-champion`` to the old one;
- each decision is written as ``selection.*`` tags on the version and as one run in the
  ``recsys-selection`` experiment, which :func:`champion_history` reads back.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from mlflow import MlflowClient
from mlflow.artifacts import download_artifacts
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from recsys.errors import UsageError
from recsys.rundir import prediction_labels, utc_now
from recsys.selection_stats import MetricSpec, paired_bootstrap, parse_metric
from recsys.tracking import client_for, ensure_experiment, resolve_tracking_uri

CHAMPION = "champion"
PREVIOUS = "previous-champion"
SELECTION_EXPERIMENT = "recsys-selection"
DECISION_TAG = "selection.decision"
DEMOTED_TAG = "selection.demoted_by"


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


def _check_same_rows(frames: dict[str, pl.DataFrame], ref: str, truth: str) -> None:
    """Refuses versions evaluated on other rows: a paired comparison needs the same rows."""
    base = frames[ref]
    problems = []
    for version, df in frames.items():
        if version == ref:
            continue
        if df.height != base.height or not df["row_id"].equals(base["row_id"]):
            problems.append(f"version {version} was evaluated on other rows than version {ref} "
                            f"({df.height} vs {base.height} rows, or different row_id)")
        elif not df[truth].equals(base[truth]):
            problems.append(f"version {version}: column '{truth}' differs from version {ref} "
                            "on the same row_id (different evaluation data?)")
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


def _record(client: MlflowClient, model_name: str, d: dict[str, Any], params: dict[str, Any],
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
            "recsys.selection.seq": str(time.time_ns()),  # ms start times can tie
            "recsys.selection.reason": d["reason"],
            "recsys.selection.decided_at": d["decided_at"],
            "mlflow.runName": f"{model_name}-v{version}-{d['decision']}"}
    run = client.create_run(exp_id, tags=tags)
    for k, v in params.items():
        client.log_param(run.info.run_id, k, v)
    for k in ("champion_metric", "challenger_metric", "gain", "gain_boot_mean", "ci_low",
              "ci_high", "p_value"):
        if d.get(k) is not None:
            client.log_metric(run.info.run_id, k, d[k])
    client.set_terminated(run.info.run_id, "FINISHED")
    d["selection_run_id"] = run.info.run_id
    for k, v in d.items():
        if v is not None and k != "version":
            client.set_model_version_tag(model_name, version, f"selection.{k}", str(v))


def _decide(res: dict[str, Any], min_gain: float, alpha: float) -> tuple[str, str]:
    gain, p = res["gain"], res["p_value"]
    if gain <= 0:
        return "kept", f"gain {gain:.6g} is not positive"
    if gain < min_gain:
        return "kept", f"gain {gain:.6g} is below the minimum {min_gain:g}"
    if p >= alpha:
        return "kept", f"not significant (p = {p:.4g} ≥ alpha = {alpha:g})"
    return "promoted", f"gain {gain:.6g} ≥ {min_gain:g} and p = {p:.4g} < {alpha:g}"


def select(model_name: str, metric: str | None = None, min_gain: float = 0.0,
           alpha: float = 0.05, dry_run: bool = False, tracking_uri: str | None = None,
           n_boot: int = 1000, seed: int = 0, split: str = "test") -> dict[str, Any]:
    """Judges every undecided version of ``model_name`` against the champion (module doc).

    ``metric`` defaults to ``labels.<primary>.gauc`` (primary = first label head of the
    predictions). With ``dry_run`` nothing is written. Returns a JSON-able report with one
    entry per decision. Raises ``UsageError`` for a missing model, metric or predictions, and
    for versions evaluated on different rows (before anything is changed).
    """
    if not 0 < alpha < 1:
        raise UsageError(f"--alpha must be in (0, 1), got {alpha}")
    if n_boot < 1:
        raise UsageError(f"--n-boot must be ≥ 1, got {n_boot}")
    uri = resolve_tracking_uri(tracking_uri)
    client = client_for(uri)
    versions = _versions(client, model_name)
    champion = champion_version(client, model_name)
    pending = [v for v in versions if str(v.version) != champion
               and DECISION_TAG not in v.tags and DEMOTED_TAG not in v.tags]
    report: dict[str, Any] = {
        "model": model_name, "metric": metric, "split": split, "min_gain": min_gain,
        "alpha": alpha, "n_boot": n_boot, "seed": seed, "dry_run": dry_run,
        "tracking_uri": uri, "champion_before": champion, "champion_after": champion,
        "decisions": []}
    if not pending:
        return report
    by_version = {str(v.version): v for v in versions}
    involved = ([champion] if champion else []) + [str(v.version) for v in pending]
    with tempfile.TemporaryDirectory() as tmp:
        frames = {v: _load_predictions(by_version[v], split, uri, Path(tmp)) for v in involved}
    ref = frames[involved[0]]
    metric = metric or f"labels.{(prediction_labels(ref) or ['?'])[0]}.gauc"
    report["metric"] = metric
    try:
        spec = parse_metric(metric, ref.columns)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    _check_same_rows(frames, involved[0], spec.head)
    mask, y, users = _arrays(spec, ref)
    params = {"model": model_name, "metric": metric, "split": split, "min_gain": min_gain,
              "alpha": alpha, "n_boot": n_boot, "seed": seed}

    current = champion
    for mv in pending:
        version = str(mv.version)
        d: dict[str, Any] = {"version": version, "compared_with": current,
                             "champion_before": current, "decided_at": utc_now()}
        if current is None:
            d.update(decision="initial", reason="no champion yet: the first candidate becomes it")
        else:
            p_champ = frames[current][f"pred_{spec.head}"].to_numpy()[mask]
            p_chal = frames[version][f"pred_{spec.head}"].to_numpy()[mask]
            try:
                res = paired_bootstrap(spec, y, p_champ, p_chal, users, n_boot=n_boot,
                                       seed=seed, alpha=alpha).to_dict()
            except ValueError as exc:
                raise UsageError(str(exc)) from None
            res["champion_metric"] = res.pop("champion")
            res["challenger_metric"] = res.pop("challenger")
            d.update(res)
            d["decision"], d["reason"] = _decide(res, min_gain, alpha)
        if d["decision"] in ("promoted", "initial"):
            current = version
        d["champion_after"] = current
        if not dry_run:
            _record(client, model_name, d, params, uri)
        report["decisions"].append(d)
    report["champion_after"] = current
    return report


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
            "metric": r.data.params.get("metric"), "run_id": r.info.run_id})
    out.sort(key=lambda e: e["seq"])
    for e in out:
        del e["seq"]
    return out

