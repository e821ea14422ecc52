"""Paired bootstrap over users of the difference in an offline metric (docs/design.md §5.4).

Both models are scored on the same evaluation rows. One bootstrap replicate draws U users with
replacement (U = users in the evaluation set); a user drawn k times contributes its rows k
times, for both models alike (that is the pairing). Resampling is expressed as per-user
multiplicities ``c`` (B x U) so no rows are copied:

- GAUC: per user the AUC a_u and row count n_u are fixed, so a replicate is
  Σ c_u n_u a_u / Σ c_u n_u over users holding both classes: one matrix product.
- logloss: per-user loss sums and row counts, the same way.
- AUC on (a slice of) rows: a weighted Mann–Whitney count with row weight c[user(row)], using
  one sort of each model's scores shared by all replicates.

``gain`` is signed so that positive means the challenger is better (for logloss it is
champion − challenger). The p-value is the two-sided percentile-bootstrap p-value
2·min(P*(δ ≤ 0), P*(δ ≥ 0)) with the usual +1 correction; the interval is the percentile
interval at level 1 − alpha.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from recsys.metrics import EPS, group_auc
from recsys.metrics import auc as plain_auc

KINDS = ("auc", "gauc", "logloss", "auc_cold_item", "auc_cold_user")


@dataclass(frozen=True)
class MetricSpec:
    """A selectable metric: ``path`` as in metrics.json, the truth column ``head``, ``kind``
    (auc / gauc / logloss) and an optional 0/1 row ``subset`` column (cold slices)."""

    path: str
    head: str
    kind: str
    subset: str | None = None

    @property
    def higher_is_better(self) -> bool:
        return self.kind != "logloss"


def parse_metric(path: str, columns: list[str]) -> MetricSpec:
    """``labels.<label>.<auc|gauc|logloss|auc_cold_item|auc_cold_user>`` or
    ``retention.<return_7d|return_14d>.auc``; ValueError naming the accepted forms."""
    parts = path.split(".")
    accepted = ("accepted: labels.<label>.{" + ",".join(KINDS) + "} or "
                "retention.{return_7d,return_14d}.auc")
    if len(parts) != 3:
        raise ValueError(f"metric '{path}' is not selectable; {accepted}")
    section, head, name = parts
    ok = (section == "labels" and name in KINDS) or (section == "retention" and name == "auc")
    if not ok:
        raise ValueError(f"metric '{path}' is not selectable; {accepted}")
    for col in (head, f"pred_{head}"):
        if col not in columns:
            raise ValueError(f"metric '{path}': predictions have no column '{col}'")
    subset = None
    if name.startswith("auc_cold_"):
        subset = name[len("auc_"):]
        if subset not in columns:
            raise ValueError(f"metric '{path}': predictions have no column '{subset}'")
    kind = "auc" if name.startswith("auc") else name
    return MetricSpec(path=path, head=head, kind=kind, subset=subset)


@dataclass(frozen=True)
class BootstrapResult:
    """Champion/challenger metric on all rows, the gain (positive = challenger better), the
    bootstrap mean of the gain, its percentile interval, the p-value and the sizes."""

    champion: float
    challenger: float
    gain: float
    gain_boot_mean: float
    ci_low: float
    ci_high: float
    ci_level: float
    p_value: float
    n_boot: int
    users: int
    rows: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _multiplicities(rng: np.random.Generator, users: int, size: int) -> np.ndarray:
    """(size x users) counts of each user in ``size`` resamples of ``users`` users."""
    draws = rng.integers(0, users, size=(size, users))
    flat = draws + (np.arange(size)[:, None] * users)
    return np.bincount(flat.ravel(), minlength=size * users).reshape(size, users)


class _WeightedAUC:
    """AUC of one model's scores under many row-weight vectors, sharing one sort."""

    def __init__(self, y: np.ndarray, p: np.ndarray) -> None:
        order = np.argsort(p, kind="stable")
        sp = p[order]
        self.order = order
        self.pos = y[order].astype(bool)
        self.starts = np.flatnonzero(np.concatenate(([True], sp[1:] != sp[:-1])))

    def __call__(self, w: np.ndarray) -> np.ndarray:
        """w (B x N) row weights → (B,) weighted AUCs (NaN when a class has no weight)."""
        w = w[:, self.order]
        wpos = np.add.reduceat(np.where(self.pos, w, 0.0), self.starts, axis=1)
        wneg = np.add.reduceat(np.where(self.pos, 0.0, w), self.starts, axis=1)
        below = np.cumsum(wneg, axis=1) - wneg  # negative weight strictly below each tie group
        u = (wpos * (below + 0.5 * wneg)).sum(axis=1)
        denom = wpos.sum(axis=1) * wneg.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denom > 0, u / np.where(denom > 0, denom, 1.0), np.nan)


def _replicate_fn(spec: MetricSpec, y: np.ndarray, p: np.ndarray, users: np.ndarray,
                  n_users: int):
    """(value on all rows, function c (B x U) → B metric values) for one model."""
    if spec.kind == "gauc":
        per = group_auc(y, p, users)
        idx = per.groups.astype(np.int64)
        num = np.zeros(n_users)
        den = np.zeros(n_users)
        num[idx] = per.rows * per.auc
        den[idx] = per.rows
        value = per.gauc
        return value, lambda c: (c @ num) / np.where(c @ den > 0, c @ den, np.nan)
    if spec.kind == "logloss":
        q = np.clip(p.astype(np.float64), EPS, 1 - EPS)
        loss = -np.where(y.astype(bool), np.log(q), np.log1p(-q))
        sums = np.bincount(users, weights=loss, minlength=n_users)
        counts = np.bincount(users, minlength=n_users).astype(np.float64)
        return float(loss.mean()), lambda c: (c @ sums) / (c @ counts)
    weighted = _WeightedAUC(y, p)
    return plain_auc(y, p), lambda c: weighted(c[:, users].astype(np.float64))


def paired_bootstrap(spec: MetricSpec, y: np.ndarray, p_champion: np.ndarray,
                     p_challenger: np.ndarray, users: np.ndarray, n_boot: int = 1000,
                     seed: int = 0, alpha: float = 0.05) -> BootstrapResult:
    """Paired bootstrap over users of challenger − champion in ``spec`` (see module doc).

    ``y`` (N) truths, ``p_*`` (N) scores on the same rows, ``users`` (N) user of each row.
    Rows with a null truth (censored retention) and rows outside ``spec.subset`` must already
    be removed by the caller. Raises ValueError when the metric is undefined on all rows.
    """
    if not 0 < alpha < 1 or n_boot < 1:
        raise ValueError("alpha must be in (0, 1) and n_boot ≥ 1")
    _, inverse = np.unique(np.asarray(users), return_inverse=True)
    inverse = inverse.astype(np.int64)
    n_users = int(inverse.max()) + 1 if inverse.size else 0
    v_a, fn_a = _replicate_fn(spec, y, p_champion, inverse, n_users)
    v_b, fn_b = _replicate_fn(spec, y, p_challenger, inverse, n_users)
    if v_a is None or v_b is None:
        raise ValueError(f"metric '{spec.path}' is undefined on these rows (one class only)")
    sign = 1.0 if spec.higher_is_better else -1.0
    rng = np.random.default_rng(seed)
    # chunks keep the B x N weight matrix of the AUC kinds near 16M floats
    chunk = max(1, min(n_boot, 16_000_000 // max(1, y.size if spec.kind == "auc" else n_users)))
    deltas = []
    for start in range(0, n_boot, chunk):
        c = _multiplicities(rng, n_users, min(chunk, n_boot - start)).astype(np.float64)
        deltas.append(sign * (fn_b(c) - fn_a(c)))
    delta = np.concatenate(deltas)
    delta = delta[np.isfinite(delta)]  # a resample without both classes has no AUC
    if delta.size == 0:
        raise ValueError(f"metric '{spec.path}' is undefined in every bootstrap resample")
    below = (1 + np.count_nonzero(delta <= 0)) / (delta.size + 1)
    above = (1 + np.count_nonzero(delta >= 0)) / (delta.size + 1)
    lo, hi = np.quantile(delta, [alpha / 2, 1 - alpha / 2])
    return BootstrapResult(
        champion=float(v_a), challenger=float(v_b), gain=float(sign * (v_b - v_a)),
        gain_boot_mean=float(delta.mean()), ci_low=float(lo), ci_high=float(hi),
        ci_level=1 - alpha, p_value=float(min(1.0, 2 * min(below, above))),
        n_boot=int(delta.size), users=n_users, rows=int(y.size))
