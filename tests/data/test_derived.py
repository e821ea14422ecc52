"""Derived data: splits, behaviour sequences, prior rate, retention labels, cold-start flags
(docs/design.md §4.4).

Every derived column is checked against a plain Python reference on small random logs (with
many timestamp ties), plus hand-built frames with exact expected values.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data.coldstart import add_cold_flags
from data.prior_rate import add_prior_rate
from data.retention import add_retention_labels
from data.sequences import add_history
from data.split import leave_last_out, split_cuts, time_split, user_time_split

DAY = 86_400


def canonical(user, ts, label, item_row=None) -> pl.DataFrame:
    """A canonical interactions frame (only the columns derived data reads)."""
    n = len(user)
    item_row = list(range(n)) if item_row is None else item_row
    return pl.DataFrame({
        "row_id": pl.Series(range(n), dtype=pl.Int64),
        "user_id": pl.Series(user, dtype=pl.Int64),
        "item_id": pl.Series(item_row, dtype=pl.Int64),
        "ts": pl.Series(ts, dtype=pl.Int64),
        "like": pl.Series(label, dtype=pl.Int8),
        "item_row": pl.Series(item_row, dtype=pl.Int64),
    })


def random_log(seed: int, n: int, users: int = 5, span: int = 30, items: int = 8) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return canonical(rng.integers(0, users, n).tolist(), rng.integers(0, span, n).tolist(),
                     (rng.random(n) < 0.5).astype(int).tolist(), rng.integers(0, items, n).tolist())


def reference_history(df: pl.DataFrame, max_len: int) -> list[list[int]]:
    """The definition, row by row: positives of the same user strictly earlier, newest first
    (same-time positives ordered by row_id, later row_id = more recent)."""
    rows = df.to_dicts()
    out = []
    for r in rows:
        earlier = [p for p in rows if p["user_id"] == r["user_id"] and p["like"] == 1
                   and p["ts"] < r["ts"]]
        earlier.sort(key=lambda p: (p["ts"], p["row_id"]), reverse=True)
        out.append([p["item_row"] for p in earlier[:max_len]])
    return out


def reference_prior_rate(df: pl.DataFrame) -> list[tuple[float, int, int]]:
    """The definition, row by row: (logit, rate bucket, rows bucket) over the same user's rows
    with a strictly earlier timestamp."""
    rows = df.to_dicts()
    out = []
    for r in rows:
        earlier = [p for p in rows if p["user_id"] == r["user_id"] and p["ts"] < r["ts"]]
        n, pos = len(earlier), sum(p["like"] for p in earlier)
        logit = math.log((pos + 1) / (n - pos + 1))
        if n == 0:
            out.append((0.0, 16, 0))
            continue
        bucket = min(max(math.floor(logit / 0.5) + 8, 0), 15)
        out.append((min(max(logit, -4.0), 4.0), bucket, min(1 + int(math.log2(n)), 16)))
    return out


def reference_retention(df: pl.DataFrame, horizon: int) -> list[tuple[int | None, int | None]]:
    days = {}
    for r in df.to_dicts():
        days.setdefault(r["user_id"], set()).add(r["ts"] // DAY)
    last = max(d for s in days.values() for d in s)
    out = []
    for r in df.to_dicts():
        day = r["ts"] // DAY
        if day + horizon > last:
            out.append((None, None))
            continue
        n = len([d for d in days[r["user_id"]] if day < d <= day + horizon])
        out.append((int(n > 0), n))
    return out


logs = st.integers(1, 40).flatmap(lambda n: st.tuples(
    st.lists(st.integers(0, 3), min_size=n, max_size=n),
    st.lists(st.integers(0, 6), min_size=n, max_size=n),  # few distinct times: many ties
    st.lists(st.integers(0, 1), min_size=n, max_size=n),
))


@settings(max_examples=150, deadline=None)
@given(log=logs, max_len=st.integers(1, 5))
def test_history_never_leaks_and_matches_reference(log, max_len):
    df = canonical(*log)  # item_row == row_id, so a history entry names its source row
    out = add_history(df, "like", max_len)
    ts, user, like = df["ts"].to_list(), df["user_id"].to_list(), df["like"].to_list()
    for r, hist in enumerate(out["hist_rows"].to_list()):
        assert len(hist) <= max_len
        for h in hist:
            assert ts[h] < ts[r] and user[h] == user[r] and like[h] == 1
    assert out["hist_rows"].to_list() == reference_history(df, max_len)


@settings(max_examples=150, deadline=None)
@given(log=logs)
def test_prior_rate_matches_reference(log):
    df = canonical(*log)
    out = add_prior_rate(df, "like")
    assert out.drop("prior_logit", "prior_rate", "prior_rows").equals(df)  # order, columns kept
    want = reference_prior_rate(df)
    assert out["prior_logit"].dtype == pl.Float32
    assert out["prior_logit"].to_numpy() == pytest.approx([w[0] for w in want], abs=1e-6)
    assert list(zip(out["prior_rate"], out["prior_rows"], strict=True)) == [w[1:] for w in want]


def test_history_matches_reference_with_repeated_items():
    df = random_log(seed=1, n=600, users=7, span=80, items=15).sample(fraction=1.0, shuffle=True,
                                                                       seed=3)
    out = add_history(df, "like", 4)
    assert out.drop("hist_rows").equals(df)  # row order and columns kept
    assert out["hist_rows"].dtype == pl.List(pl.Int64)
    assert out["hist_rows"].to_list() == reference_history(df, 4)


def test_history_hand_built():
    df = canonical(user=[1, 1, 1, 2, 2, 1, 1], ts=[5, 3, 3, 1, 2, 9, 9],
                   label=[1, 1, 1, 1, 0, 0, 1], item_row=[10, 11, 12, 13, 14, 15, 16])
    assert add_history(df, "like", 2)["hist_rows"].to_list() == [
        [12, 11], [], [], [], [13], [10, 12], [10, 12]]
    no_positives = df.with_columns(pl.lit(0, dtype=pl.Int8).alias("like"))
    assert add_history(no_positives, "like", 3)["hist_rows"].to_list() == [[]] * 7
    with pytest.raises(ValueError):
        add_history(df, "like", 0)


def test_retention_censoring_hand_built():
    # Log days 0..20 (D = 20). User 1 active on days 0, 3, 5, 12, 20; user 2 on 0 and 14.
    df = canonical(user=[1, 1, 1, 1, 1, 1, 2, 2],
                   ts=[0, 3 * DAY + 5, 3 * DAY + 9, 5 * DAY, 12 * DAY, 20 * DAY, DAY - 1, 14 * DAY],
                   label=[0] * 8)
    out = add_retention_labels(df)
    assert out.columns == [*df.columns, "return_7d", "lt7", "return_14d", "lt14"]
    assert out["return_7d"].dtype == pl.Int8 and out["lt7"].dtype == pl.Int32
    # day 0: 7d window 1..7 holds days 3, 5; 14d window 1..14 holds 3, 5, 12.
    # day 3 (twice): 4..10 holds 5; 4..17 holds 5, 12.   day 5: 6..12 holds 12; 6..19 holds 12.
    # day 12: 13..19 holds nothing (user 1); 14d censored (26 > 20). day 20: both censored.
    # user 2 day 0: 1..7 nothing, 1..14 holds 14. day 14: 7d censored (21 > 20).
    assert out["return_7d"].to_list() == [1, 1, 1, 1, 0, None, 0, None]
    assert out["lt7"].to_list() == [2, 1, 1, 1, 0, None, 0, None]
    assert out["return_14d"].to_list() == [1, 1, 1, 1, None, None, 1, None]
    assert out["lt14"].to_list() == [3, 2, 2, 1, None, None, 1, None]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_retention_matches_reference(seed):
    rng = np.random.default_rng(seed)
    n = 300
    df = canonical(rng.integers(0, 9, n).tolist(), rng.integers(0, 40 * DAY, n).tolist(),
                   [0] * n).sample(fraction=1.0, shuffle=True, seed=seed)
    out = add_retention_labels(df)
    for horizon in (7, 14):
        got = list(zip(out[f"return_{horizon}d"].to_list(), out[f"lt{horizon}"].to_list(),
                       strict=True))
        assert got == reference_retention(df, horizon)


def test_time_split_boundaries_and_ties():
    # 100 rows over 20 distinct times (5 rows per time), given in scrambled order.
    rng = np.random.default_rng(0)
    ts = np.repeat(np.arange(20) * 10, 5)
    order = rng.permutation(100)
    df = canonical(user=[0] * 100, ts=ts[order].tolist(), label=[0] * 100)
    out = time_split(df)
    assert out.drop("split").equals(df)
    counts = dict(out["split"].value_counts().iter_rows())
    assert counts == {"train": 80, "valid": 10, "test": 10}
    by_split = out.group_by("split").agg(pl.col("ts").min().alias("lo"), pl.col("ts").max().alias("hi"))
    bounds = {s: (lo, hi) for s, lo, hi in by_split.iter_rows()}
    assert bounds["train"][1] <= bounds["valid"][0] and bounds["valid"][1] <= bounds["test"][0]
    # 80 rows are exactly times 0..150; with an 82% cut the boundary falls inside the five rows
    # at time 160, which are then split by row_id.
    out2 = time_split(df, (0.82, 0.1, 0.08))
    at_boundary = out2.filter(pl.col("ts") == 160).sort("row_id")["split"].to_list()
    assert at_boundary == ["train", "train", "valid", "valid", "valid"]
    assert split_cuts(10, (0.85, 0.1, 0.05)) == (9, 10)  # rounded half up, parts sum to n
    with pytest.raises(ValueError):
        time_split(df, (0.5, 0.2, 0.2))


def test_leave_last_out():
    df = canonical(user=[1, 1, 1, 2, 2, 1, 3, 1], ts=[5, 3, 3, 1, 2, 9, 4, 9], label=[0] * 8)
    out = leave_last_out(df)
    # user 1: rows 1, 2 (ts 3, tie by row_id), 0 (ts 5), 5 and 7 (ts 9): 7 is last, 5 second.
    assert out["split"].to_list() == ["train", "train", "train", "valid", "test", "valid",
                                      "test", "test"]


def test_user_time_split_cuts_each_user_in_time_order():
    # User 1: 10 rows with ties in ts (broken by row_id); user 2: 3 rows; rows interleaved.
    user = [1, 2] * 3 + [1] * 7
    ts = [9, 1, 9, 2, 0, 3, 5, 5, 1, 7, 8, 2, 6]
    df = canonical(user=user, ts=ts, label=[0] * len(user))
    out = user_time_split(df).with_row_index("r")
    for u, expected in ((1, {"train": 8, "valid": 1, "test": 1}), (2, {"train": 2, "valid": 1})):
        rows = out.filter(pl.col("user_id") == u).sort("ts", "row_id")
        assert rows["split"].value_counts().rows() and dict(rows["split"].value_counts().rows()) == expected
        # In each user's time order: all train, then valid, then test.
        order = {"train": 0, "valid": 1, "test": 2}
        ranks = [order[s] for s in rows["split"]]
        assert ranks == sorted(ranks)
    # User 1's last row by (ts, row_id) is the second ts-9 row (row_id 2), its test row.
    assert out.filter(pl.col("split") == "test")["row_id"].to_list() == [2]
    assert out["row_id"].to_list() == df["row_id"].to_list()  # input order kept


def test_cold_flags():
    df = canonical(user=[1, 2, 1, 3, 2], ts=[1, 2, 3, 4, 5], label=[0] * 5,
                   item_row=[7, 8, 9, 7, 9])
    out = add_cold_flags(df.with_columns(
        pl.Series("split", ["train", "train", "valid", "test", "test"])))
    assert out["cold_item"].to_list() == [False, False, True, False, True]
    assert out["cold_user"].to_list() == [False, False, False, True, False]
    with pytest.raises(ValueError):
        add_cold_flags(df)
