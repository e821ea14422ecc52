"""Ours − the best FuxiCTR model with a 95% interval, for ``benchmarks/peers.py``.

The best FuxiCTR model of a dataset is the one with the highest mean *validation* GAUC over
seeds (picking it on test would flatter it). Each side's seeds are pooled into a seed ensemble
(mean logit, as ``benchmarks/quality.py`` does for its "paired" rows), and the two ensembles are
compared on the same test rows by ``recsys.runs.selection_stats.paired_bootstrap``: users resampled
with replacement, so the interval is the test split's share of the noise (which users it
happened to hold), not the training seeds' (the table's min..max shows those). Each model's
ensemble is also kept on disk (``save_predictions``) for ``benchmarks/quality.py`` to pair EM3
with the best FuxiCTR model.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from benchmarks.quality_runs import overrides_key

KINDS = ("auc", "gauc", "logloss")
# Seed-ensemble test predictions of every model, for quality.py's paired intervals (git-ignored).
PREDICTIONS = Path(__file__).resolve().parent / ".data" / "peers_predictions"


def seed_ensemble(probs: list[np.ndarray]) -> np.ndarray:
    """Mean logit of the seeds' probabilities, back to a probability."""
    p = np.clip(np.stack([np.asarray(x, dtype=np.float64) for x in probs]), 1e-7, 1 - 1e-7)
    logit = np.log(p / (1 - p)).mean(axis=0)
    return 1 / (1 + np.exp(-logit))


def best_on_valid(rows: list[dict[str, Any]], dataset: str) -> str | None:
    """The FuxiCTR model of ``dataset`` with the highest mean validation GAUC (None when no
    FuxiCTR row has one, e.g. in results recorded before it was measured)."""
    scores: dict[str, list[float]] = {}
    for r in rows:
        if (r["dataset"] == dataset and r["model"].startswith("FuxiCTR")
                and r.get("valid_gauc") is not None):
            scores.setdefault(r["model"], []).append(r["valid_gauc"])
    if not scores:
        return None
    return max(scores, key=lambda m: statistics.fmean(scores[m]))


def paired_interval(label: str, y: np.ndarray, users: np.ndarray, ours: list[np.ndarray],
                    peer: list[np.ndarray], peer_name: str, ours_name: str,
                    n_boot: int = 2000) -> dict[str, Any]:
    """Ours − ``peer`` (seed ensembles of the test probabilities, one array per seed) per
    metric of ``KINDS`` with its 95% interval.

    ``gain`` > 0 means ours is better; for logloss it is the peer's minus ours (lower is
    better), as ``paired_bootstrap`` signs it.
    """
    from recsys.runs.selection_stats import MetricSpec, paired_bootstrap

    a, b = seed_ensemble(peer), seed_ensemble(ours)  # champion = the peer, challenger = ours
    out: dict[str, Any] = {"champion": peer_name, "challenger": ours_name,
                           "seeds": len(ours), "picked_by": "mean validation GAUC",
                           "sign": "gain > 0: ours better (logloss: peer's minus ours)"}
    for kind in KINDS:
        res = paired_bootstrap(MetricSpec(f"labels.{label}.{kind}", label, kind), y, a, b,
                               users, n_boot=n_boot, seed=0)
        out[kind] = {k: round(getattr(res, k), 4) if isinstance(getattr(res, k), float)
                     else getattr(res, k)
                     for k in ("gain", "ci_low", "ci_high", "p_value", "users", "rows")}
    return out


def predictions_dir(name: str, overrides: tuple[str, ...] | list[str],
                    root: Path | None = None) -> Path:
    """Where ``bench_dataset`` keeps the test predictions of dataset ``name`` (and runs with
    these ``--set`` overrides) for ``benchmarks/quality.py`` to pair its rows with: under
    ``root``, ``PREDICTIONS`` by default."""
    return (PREDICTIONS if root is None else root) / f"{name}{overrides_key(list(overrides))}"


def save_predictions(out: Path, test: dict[str, np.ndarray], probs: dict[str, list[np.ndarray]],
                     rows: list[dict[str, Any]], name: str, best: str | None) -> None:
    """One Parquet file per model: ``row_id``, ``user_key``, ``y`` and ``p`` (its seed
    ensemble: mean logit), plus ``index.json`` (model → file, seeds, mean validation GAUC, and
    which FuxiCTR model is best on validation)."""
    out.mkdir(parents=True, exist_ok=True)
    index: dict[str, Any] = {"best_fuxictr_on_valid": best, "models": {}}
    for i, (model, per_seed) in enumerate(probs.items()):
        file = f"model_{i}.parquet"
        pl.DataFrame({"row_id": test["row_id"], "user_key": test["user_key"], "y": test["y"],
                      "p": seed_ensemble(per_seed)}).write_parquet(out / file)
        valid = [r["valid_gauc"] for r in rows
                 if r["dataset"] == name and r["model"] == model and r.get("valid_gauc") is not None]
        index["models"][model] = {"file": file, "seeds": len(per_seed),
                                  "valid_gauc": statistics.fmean(valid) if valid else None}
    (out / "index.json").write_text(json.dumps(index, indent=2))
