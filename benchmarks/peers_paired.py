"""Ours − the best FuxiCTR model with a 95% interval, for ``benchmarks/peers.py``.

The best FuxiCTR model of a dataset is the one with the highest mean *validation* GAUC over
seeds (picking it on test would flatter it). Each side's seeds are pooled into a seed ensemble
(mean logit, as ``benchmarks/quality.py`` does for its "paired" rows), and the two ensembles are
compared on the same test rows by ``recsys.selection_stats.paired_bootstrap``: users resampled
with replacement, so the interval is the test split's share of the noise (which users it
happened to hold), not the training seeds' (the table's min..max shows those).
"""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np

KINDS = ("auc", "gauc", "logloss")


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
    from recsys.selection_stats import MetricSpec, paired_bootstrap

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
