"""Offline metrics exactly as docs/design.md §5: AUC, GAUC, logloss, cold-start slices, retention.

Everything is sort-based and vectorised so that 10M rows take seconds, not minutes:

- ``auc``: sort the positive and the negative scores separately and count, for every positive,
  the negatives below it (``searchsorted`` left) and tied with it (right − left, counted ½).
  That is the Mann–Whitney statistic with ties, i.e. the ROC AUC.
- ``gauc``: the same count inside each user. Each row gets one 64-bit key
  ``user << 32 | score_code`` where ``score_code`` is an order-preserving 32-bit code of the
  score (its float32 bits when the scores are exactly float32, else its dense rank), so sorting
  the keys sorts by (user, score) and ``searchsorted`` on keys counts negatives per user.

An undefined metric (no rows, or a single class) is ``None`` with a reason in ``notes`` and is
never reported as 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
from scipy.stats import rankdata

EPS = 1e-7  # logloss clipping (docs/design.md §5.1)
RETENTION_HEADS = (("return_7d", "lt7"), ("return_14d", "lt14"))


def _check(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y)
    p = np.asarray(p)
    if y.shape != p.shape or y.ndim != 1:
        raise ValueError(f"labels {y.shape} and scores {p.shape} must be equal-length 1-D arrays")
    if y.dtype != np.bool_:
        if y.size and not ((y == 0) | (y == 1)).all():
            raise ValueError("labels must be 0/1")
        y = y.astype(np.bool_)
    if p.dtype != np.float32:
        p = p.astype(np.float64)
    if p.size and not np.isfinite(p).all():
        raise ValueError("scores must be finite (no NaN/inf)")
    return y, p


def undefined_reason(y: np.ndarray) -> str | None:
    """Why an AUC over labels ``y`` is undefined, or None when both classes occur."""
    y = np.asarray(y)
    if y.size == 0:
        return "no rows"
    pos = int(np.count_nonzero(y))
    if pos == 0:
        return "only one class (all 0)"
    if pos == y.size:
        return "only one class (all 1)"
    return None


def auc(y: np.ndarray, p: np.ndarray) -> float | None:
    """ROC AUC of scores ``p`` (N) for 0/1 labels ``y`` (N), ties counted ½; None when only
    one class occurs."""
    y, p = _check(y, p)
    pos = np.sort(p[y])
    neg = np.sort(p[~y])
    if pos.size == 0 or neg.size == 0:
        return None
    lo = np.searchsorted(neg, pos, side="left")
    hi = np.searchsorted(neg, pos, side="right")
    # 2·U = Σ (below + below_or_tied), exact in int64
    return float((lo.sum(dtype=np.int64) + hi.sum(dtype=np.int64)) / (2.0 * pos.size * neg.size))


def _score_codes(p: np.ndarray) -> np.ndarray:
    """Order-preserving uint64 codes < 2**32 with equal codes exactly for equal scores."""
    with np.errstate(over="ignore", invalid="ignore"):
        f32 = p.astype(np.float32)
        exact = p.dtype == np.float32 or np.array_equal(f32.astype(np.float64), p)
    if exact:
        # float32 bit patterns, sign-flipped so unsigned order is numeric order; -0.0 + 0.0 = +0.0
        bits = (f32 + np.float32(0.0)).view(np.uint32).astype(np.uint64)
        return np.where(bits >= 0x80000000, ~bits & 0xFFFFFFFF, bits | 0x80000000)
    order = np.argsort(p)
    sp = p[order]
    dense = np.empty(p.size, dtype=np.uint64)
    dense[order] = np.concatenate(([0], np.cumsum(sp[1:] != sp[:-1], dtype=np.uint64)))
    return dense


def _group_codes(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(codes < 2**31 as uint64, uniques or None when codes are the group values themselves)."""
    g = np.asarray(groups)
    if np.issubdtype(g.dtype, np.integer) and g.size:
        lo, hi = int(g.min()), int(g.max())
        if lo >= 0 and hi < 2**31:
            return g.astype(np.uint64), None  # dense user keys: no extra sort needed
    uniques, inverse = np.unique(g, return_inverse=True)
    return inverse.astype(np.uint64), uniques


@dataclass(frozen=True)
class GroupAUC:
    """Per-group AUCs of the groups that hold both classes (sorted by group).

    ``groups`` (G) are the group values, ``rows`` (G) their row counts (both classes),
    ``auc`` (G) their AUCs. ``gauc`` is the row-weighted mean (None when G = 0).
    """

    groups: np.ndarray
    rows: np.ndarray
    auc: np.ndarray

    @property
    def gauc(self) -> float | None:
        total = self.rows.sum()
        return float(np.dot(self.rows, self.auc) / total) if total else None


def group_auc(y: np.ndarray, p: np.ndarray, groups: np.ndarray) -> GroupAUC:
    """AUC inside every group of ``groups`` (N) that holds both classes; see module doc."""
    y, p = _check(y, p)
    if np.asarray(groups).shape != y.shape:
        raise ValueError("groups must have one entry per row")
    gcodes, uniques = _group_codes(groups)
    key = (gcodes << np.uint64(32)) | _score_codes(p)
    kp = np.sort(key[y])
    kn = np.sort(key[~y])
    if kp.size == 0 or kn.size == 0:
        empty = np.empty(0)
        return GroupAUC(groups=empty, rows=empty.astype(np.int64), auc=empty)
    lo = np.searchsorted(kn, kp, side="left")
    hi = np.searchsorted(kn, kp, side="right")
    gp = kp >> np.uint64(32)
    starts = np.flatnonzero(np.concatenate(([True], gp[1:] != gp[:-1])))
    gids = gp[starts]
    n_pos = np.diff(np.append(starts, kp.size))
    neg_start = np.searchsorted(kn, gids << np.uint64(32), side="left")
    neg_end = np.searchsorted(kn, (gids + np.uint64(1)) << np.uint64(32), side="left")
    n_neg = neg_end - neg_start
    # lo counts negatives of earlier groups too: subtract them once per positive
    twice_u = np.add.reduceat((lo + hi).astype(np.int64), starts) - 2 * n_pos * neg_start
    ok = n_neg > 0
    aucs = twice_u[ok] / (2.0 * n_pos[ok] * n_neg[ok])
    names = gids[ok] if uniques is None else uniques[gids[ok].astype(np.int64)]
    return GroupAUC(groups=names, rows=(n_pos + n_neg)[ok].astype(np.int64), auc=aucs)


def gauc(y: np.ndarray, p: np.ndarray, groups: np.ndarray) -> tuple[float | None, int]:
    """Row-weighted mean of per-group AUCs over groups holding both classes (DIN's GAUC).

    Returns (gauc or None when no group holds both classes, number of groups counted).
    """
    per = group_auc(y, p, groups)
    return per.gauc, int(per.rows.size)


def logloss(y: np.ndarray, p: np.ndarray) -> float | None:
    """Mean binary cross-entropy with ``p`` clipped to [1e-7, 1-1e-7]; None without rows."""
    y, p = _check(y, p)
    if y.size == 0:
        return None
    q = np.clip(p.astype(np.float64), EPS, 1.0 - EPS)
    return float(-np.mean(np.where(y, np.log(q), np.log1p(-q))))


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman rank correlation (average ranks for ties); None for < 2 points or a
    constant side."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size < 2:
        return None
    ra, rb = rankdata(a) - (a.size + 1) / 2.0, rankdata(b) - (b.size + 1) / 2.0
    denom = np.sqrt(np.dot(ra, ra) * np.dot(rb, rb))
    return float(np.dot(ra, rb) / denom) if denom > 0 else None


def user_codes(df: pl.DataFrame) -> np.ndarray:
    """Per-row user group (N): ``user_key`` when present, else ``user_id`` as dense codes."""
    col = "user_key" if "user_key" in df.columns else "user_id"
    s = df[col]
    if s.dtype.is_integer():
        return s.to_numpy()
    return s.rank("dense").to_numpy().astype(np.int64)


def _label_metrics(df: pl.DataFrame, label: str, path: str,
                   notes: dict[str, str]) -> dict[str, Any]:
    pred = f"pred_{label}"
    df = df.filter(pl.col(label).is_not_null() & pl.col(pred).is_not_null())
    y, p = df[label].to_numpy(), df[pred].to_numpy()
    out: dict[str, Any] = {"rows": df.height, "auc": auc(y, p)}
    if out["auc"] is None:
        notes[f"{path}.auc"] = undefined_reason(y) or "undefined"
    users = user_codes(df)
    out["gauc"], out["gauc_users"] = gauc(y, p, users) if df.height else (None, 0)
    if out["gauc"] is None:
        notes[f"{path}.gauc"] = "no user has both classes"
    out["logloss"] = logloss(y, p)
    if out["logloss"] is None:
        notes[f"{path}.logloss"] = "no rows"
    for flag in ("cold_item", "cold_user"):
        if flag not in df.columns:
            out[f"auc_{flag}"] = None
            notes[f"{path}.auc_{flag}"] = f"predictions have no '{flag}' column"
            continue
        mask = df[flag].fill_null(False).to_numpy()
        out[f"rows_{flag}"] = int(mask.sum())
        out[f"auc_{flag}"] = auc(y[mask], p[mask])
        if out[f"auc_{flag}"] is None:
            notes[f"{path}.auc_{flag}"] = f"{flag} rows: {undefined_reason(y[mask])}"
        # The slice's AUC also ranks users against each other; its GAUC asks only whether
        # each user's cold rows are ordered right (for cold items: new items for a user).
        out[f"gauc_{flag}"], out[f"gauc_users_{flag}"] = gauc(y[mask], p[mask], users[mask])
        if out[f"gauc_{flag}"] is None:
            notes[f"{path}.gauc_{flag}"] = (f"{flag} rows: "
                                            f"{'no user has both classes' if mask.any() else 'no rows'}")
    return out


def _retention_metrics(df: pl.DataFrame, notes: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for head, count in RETENTION_HEADS:
        pred = f"pred_{head}"
        if head not in df.columns or pred not in df.columns:
            out[head] = {"auc": None, "rows": 0}
            notes[f"retention.{head}.auc"] = f"predictions have no '{head}'/'{pred}' columns"
        else:
            # censored rows have a null truth: left out, never counted as "did not return"
            sub = df.filter(pl.col(head).is_not_null() & pl.col(pred).is_not_null())
            y = sub[head].to_numpy()
            out[head] = {"auc": auc(y, sub[pred].to_numpy()), "rows": sub.height}
            if out[head]["auc"] is None:
                notes[f"retention.{head}.auc"] = f"uncensored rows: {undefined_reason(y)}"
        # predicted LT: a dedicated pred_lt7 head when the model has one, else the return head
        score = f"pred_{count}" if f"pred_{count}" in df.columns else pred
        key = f"{count}_spearman"
        if count not in df.columns or score not in df.columns:
            out[key], out[f"{count}_users"] = None, 0
            notes[f"retention.{key}"] = f"predictions have no '{count}'/'{score}' columns"
            continue
        per_user = (
            df.with_columns(_user=pl.Series(user_codes(df)))
            .filter(pl.col(count).is_not_null() & pl.col(score).is_not_null())
            .group_by("_user")
            .agg(pl.col(count).cast(pl.Float64).mean().alias("obs"),
                 pl.col(score).cast(pl.Float64).mean().alias("pred"))
        )
        out[key] = spearman(per_user["obs"].to_numpy(), per_user["pred"].to_numpy())
        out[f"{count}_users"] = per_user.height
        if out[key] is None:
            notes[f"retention.{key}"] = (f"{per_user.height} users with uncensored rows; "
                                         "needs ≥ 2 and non-constant values")
    return out


def compute_metrics(predictions: pl.DataFrame, labels: list[str] | tuple[str, ...], split: str,
                    throughput: dict[str, float | None] | None = None) -> dict[str, Any]:
    """The ``metrics.json`` dict (docs/design.md §5.3) of a predictions frame (``recsys.runs.rundir`` layout).

    Per label: ``auc``, ``gauc`` (+ ``gauc_users``), ``logloss``, ``auc_cold_item``,
    ``auc_cold_user`` (+ their row counts), ``gauc_cold_item``, ``gauc_cold_user`` (+ their
    user counts) and ``rows``. Retention: ``return_7d``/``return_14d``
    ``{auc, rows}`` on uncensored rows, ``lt7_spearman``/``lt14_spearman`` over users (+ user
    counts). Undefined values are None and ``notes`` maps their dotted path to the reason.
    """
    notes: dict[str, str] = {}
    out: dict[str, Any] = {
        "split": split,
        "rows": predictions.height,
        "users": int(np.unique(user_codes(predictions)).size) if predictions.height else 0,
        "labels": {lb: _label_metrics(predictions, lb, f"labels.{lb}", notes) for lb in labels},
        "retention": _retention_metrics(predictions, notes),
        "throughput": dict(throughput or {"train_samples_per_s": None,
                                          "eval_samples_per_s": None}),
    }
    out["notes"] = notes
    return out


def lookup(metrics: dict[str, Any], path: str) -> Any:
    """The value at a dotted path (``labels.like.gauc``) of a metrics dict; KeyError if absent."""
    node: Any = metrics
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(path)
        node = node[part]
    return node
