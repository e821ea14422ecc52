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

Also here: the non-inferiority test of a guardrail metric (:func:`non_inferiority`), Holm's
step-down adjustment of several challengers' p-values (:func:`holm`) and the estimate of the
users an online A/B test needs to see an offline gain (:func:`ab_test_users`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from recsys.evaluation.metrics import EPS, group_auc
from recsys.evaluation.metrics import auc as plain_auc

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
    bootstrap mean of the gain, its percentile interval, the p-value, the sizes and the
    bootstrap variance of each model's metric (over resamples of ``users`` users; the A/B
    estimate reads them)."""

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
    boot_var_champion: float
    boot_var_challenger: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class NonInferiorityResult:
    """A guardrail's non-inferiority test: H0 "the challenger is worse than the champion by
    ``margin`` or more" against H1 "it is worse by less than ``margin``, or better". ``delta``
    is signed like a gain (positive = challenger better), ``lower_bound`` is the one-sided
    (1 − alpha) bootstrap bound of delta, ``p_value`` = P*(δ ≤ −margin) with +1 correction;
    the guardrail ``held`` when p < alpha."""

    metric: str
    margin: float
    champion: float
    challenger: float
    delta: float
    lower_bound: float
    p_value: float
    alpha: float
    held: bool
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


def _replicates(spec: MetricSpec, y: np.ndarray, p_champion: np.ndarray,
                p_challenger: np.ndarray, users: np.ndarray, n_boot: int, seed: int):
    """(champion value, challenger value, champion replicates, challenger replicates, users)
    of ``n_boot`` resamples of the users; replicates where the metric is undefined (a resample
    without both classes) are dropped from both."""
    _, inverse = np.unique(np.asarray(users), return_inverse=True)
    inverse = inverse.astype(np.int64)
    n_users = int(inverse.max()) + 1 if inverse.size else 0
    v_a, fn_a = _replicate_fn(spec, y, p_champion, inverse, n_users)
    v_b, fn_b = _replicate_fn(spec, y, p_challenger, inverse, n_users)
    if v_a is None or v_b is None:
        raise ValueError(f"metric '{spec.path}' is undefined on these rows (one class only)")
    rng = np.random.default_rng(seed)
    # chunks keep the B x N weight matrix of the AUC kinds near 16M floats
    chunk = max(1, min(n_boot, 16_000_000 // max(1, y.size if spec.kind == "auc" else n_users)))
    reps_a, reps_b = [], []
    for start in range(0, n_boot, chunk):
        c = _multiplicities(rng, n_users, min(chunk, n_boot - start)).astype(np.float64)
        reps_a.append(fn_a(c))
        reps_b.append(fn_b(c))
    rep_a, rep_b = np.concatenate(reps_a), np.concatenate(reps_b)
    keep = np.isfinite(rep_a) & np.isfinite(rep_b)  # a resample without both classes has no AUC
    if not keep.any():
        raise ValueError(f"metric '{spec.path}' is undefined in every bootstrap resample")
    return float(v_a), float(v_b), rep_a[keep], rep_b[keep], n_users


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
    v_a, v_b, rep_a, rep_b, n_users = _replicates(spec, y, p_champion, p_challenger, users,
                                                  n_boot, seed)
    sign = 1.0 if spec.higher_is_better else -1.0
    delta = sign * (rep_b - rep_a)
    below = (1 + np.count_nonzero(delta <= 0)) / (delta.size + 1)
    above = (1 + np.count_nonzero(delta >= 0)) / (delta.size + 1)
    lo, hi = np.quantile(delta, [alpha / 2, 1 - alpha / 2])
    return BootstrapResult(
        champion=v_a, challenger=v_b, gain=float(sign * (v_b - v_a)),
        gain_boot_mean=float(delta.mean()), ci_low=float(lo), ci_high=float(hi),
        ci_level=1 - alpha, p_value=float(min(1.0, 2 * min(below, above))),
        n_boot=int(delta.size), users=n_users, rows=int(y.size),
        boot_var_champion=float(rep_a.var()), boot_var_challenger=float(rep_b.var()))


def non_inferiority(spec: MetricSpec, y: np.ndarray, p_champion: np.ndarray,
                    p_challenger: np.ndarray, users: np.ndarray, margin: float,
                    n_boot: int = 1000, seed: int = 0,
                    alpha: float = 0.05) -> NonInferiorityResult:
    """The guardrail test of ``spec`` (see :class:`NonInferiorityResult`) by the same paired
    bootstrap over users as :func:`paired_bootstrap`; ``margin`` ≥ 0 in the metric's units
    (0.002 of logloss: the challenger may be worse by less than 0.002)."""
    if not 0 < alpha < 1 or n_boot < 1 or not margin >= 0:
        raise ValueError("alpha must be in (0, 1), n_boot ≥ 1 and margin ≥ 0")
    v_a, v_b, rep_a, rep_b, n_users = _replicates(spec, y, p_champion, p_challenger, users,
                                                  n_boot, seed)
    sign = 1.0 if spec.higher_is_better else -1.0
    delta = sign * (rep_b - rep_a)
    p = float((1 + np.count_nonzero(delta <= -margin)) / (delta.size + 1))
    return NonInferiorityResult(
        metric=spec.path, margin=float(margin), champion=v_a, challenger=v_b,
        delta=float(sign * (v_b - v_a)), lower_bound=float(np.quantile(delta, alpha)),
        p_value=p, alpha=alpha, held=p < alpha, n_boot=int(delta.size), users=n_users,
        rows=int(y.size))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given: sorted ascending, the k-th
    smallest (k = 1..m) becomes max over j ≤ k of min(1, (m − j + 1)·p(j)). A hypothesis is
    rejected at level alpha when its adjusted p-value is below alpha, which is Holm's rule:
    reject while p(k) < alpha / (m − k + 1), stop at the first that is not (every larger p-value
    is kept, whatever its own size). Ties keep the given order."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(p_values[i])))
        adjusted[i] = running
    return adjusted


AB_ESTIMATE_NOTE = (
    "an estimate, not a promise: users per arm of an online A/B test (two arms, users split "
    "evenly, a two-sided test at alpha with this power) for the offline gain to be seen, if "
    "the online metric moved by the offline gain with the per-user variance measured offline "
    "(the bootstrap variance of each model's metric times the evaluated users); online "
    "metrics, novelty and interference between users are not modelled")


def ab_test_users(res: BootstrapResult, alpha: float, power: float = 0.8) -> dict[str, Any] | None:
    """An estimate of the users per arm an online A/B test needs to detect ``res.gain``:
    n = (z_{1−alpha/2} + z_power)² · (σ²_champion + σ²_challenger) / gain², where σ² is the
    per-user variance of a model's metric, U times its bootstrap variance over resamples of
    U users (an unpaired test: each user sees one model). None for a gain that is not
    positive (there is nothing to see)."""
    if not res.gain > 0 or not 0 < power < 1:
        return None
    z = NormalDist().inv_cdf(1 - alpha / 2) + NormalDist().inv_cdf(power)
    per_user_var = res.users * (res.boot_var_champion + res.boot_var_challenger)
    n = math.ceil(z * z * per_user_var / (res.gain * res.gain))
    return {"users_per_arm": n, "users_total": 2 * n, "gain": res.gain, "alpha": alpha,
            "power": power, "per_user_sd_champion": math.sqrt(res.users * res.boot_var_champion),
            "per_user_sd_challenger": math.sqrt(res.users * res.boot_var_challenger),
            "offline_users": res.users, "is_estimate": True, "note": AB_ESTIMATE_NOTE}
