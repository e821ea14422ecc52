import math

import numpy as np
import polars as pl
import pytest

from data.prior_rate import LOGIT_BUCKETS, NO_PRIOR, add_prior_rate


def _frame(users, ts, labels) -> pl.DataFrame:
    return pl.DataFrame({"row_id": np.arange(len(users)), "user_id": users, "ts": ts,
                         "like": pl.Series(labels, dtype=pl.Int8)})


def _rate_bucket(positives: int, rows: int) -> int:
    rate = (positives + 1) / (rows + 2)
    bucket = math.floor(math.log(rate / (1 - rate)) / 0.5) + LOGIT_BUCKETS // 2
    return min(max(bucket, 0), LOGIT_BUCKETS - 1)


def test_counts_only_strictly_earlier_rows_of_the_same_user():
    # Input order shuffled on purpose; rows 2 and 3 share a timestamp.
    f = _frame(users=["a", "b", "a", "a", "a", "b", "a"],
               ts=[10, 5, 30, 30, 20, 6, 40],
               labels=[1, 0, 0, 1, 1, 1, 0])
    out = add_prior_rate(f, "like")
    assert out["row_id"].to_list() == list(range(7))  # row order kept
    # user a in time order: ts 10 (1), 20 (1), 30 (0, 1 at the same time), 40 (0)
    want_rows = {0: 0, 4: 1, 2: 2, 3: 2, 6: 4, 1: 0, 5: 1}
    want_pos = {0: 0, 4: 1, 2: 2, 3: 2, 6: 3, 1: 0, 5: 0}
    for r in range(7):
        n, p = want_rows[r], want_pos[r]
        assert out["prior_rate"][r] == (NO_PRIOR if n == 0 else _rate_bucket(p, n)), r
        assert out["prior_rows"][r] == (0 if n == 0 else 1 + int(math.log2(n))), r
    # Concrete values: 2 of 2 earlier rows liked → rate 3/4 → logit 1.0986 → bucket 8 + 2.
    assert out["prior_rate"][2] == 10 and out["prior_rows"][2] == 2
    # 3 of 4 → rate 4/6 → logit 0.693 → bucket 8 + 1; user b's second row: 0 of 1 → 1/3.
    assert out["prior_rate"][6] == 9 and out["prior_rows"][6] == 3
    assert out["prior_rate"][5] == 8 - 2
    # The dense logit: 0 without earlier rows (rate 1/2), ln 3 for 2 of 2, ln 2 for 3 of 4.
    assert out["prior_logit"].to_list() == pytest.approx(
        [0.0, 0.0, math.log(3), math.log(3), math.log(2), -math.log(2), math.log(2)], abs=1e-6)


def test_later_and_same_time_labels_never_leak():
    rng = np.random.default_rng(0)
    n = 400
    f = _frame(users=rng.integers(0, 12, n).astype(str), ts=rng.integers(0, 60, n),
               labels=rng.integers(0, 2, n))
    base = add_prior_rate(f, "like")
    # Flip the labels of every row at or after t = 30: rows before 30 must not change, and
    # neither may the rows at exactly 30 (they see only ts < 30).
    flipped = f.with_columns(pl.when(pl.col("ts") >= 30).then(1 - pl.col("like"))
                             .otherwise(pl.col("like")).alias("like"))
    after = add_prior_rate(flipped, "like")
    early = (f["ts"] <= 30).to_numpy()
    for col in ("prior_logit", "prior_rate", "prior_rows"):
        assert base[col].to_numpy()[early].tolist() == after[col].to_numpy()[early].tolist()
    assert (base["prior_rate"] != after["prior_rate"]).any()  # later rows do see the flip


def test_extreme_rates_and_long_histories_are_clipped():
    n = 70000
    f = _frame(users=["u"] * n, ts=np.arange(n), labels=np.ones(n, dtype=np.int8))
    out = add_prior_rate(f, "like")
    assert out["prior_rate"][0] == NO_PRIOR
    assert out["prior_rate"][n - 1] == LOGIT_BUCKETS - 1
    assert out["prior_rows"][n - 1] == 16 and out["prior_rows"].max() == 16
    assert out["prior_logit"][n - 1] == 4.0 and out["prior_logit"][60] == 4.0  # ln 61 > 4
    zeros = add_prior_rate(f.with_columns(pl.lit(0, pl.Int8).alias("like")), "like")
    assert zeros["prior_rate"][n - 1] == 0 and zeros["prior_logit"][n - 1] == -4.0


def test_the_item_rate_counts_every_users_earlier_rows_of_the_item():
    from data.prior_rate import add_item_prior_rate

    # The user test's rows, keyed by item instead: the same numbers must come out, under
    # the item names, whoever the users are.
    users = ["a", "b", "a", "a", "a", "b", "a"]
    f = _frame(users=[f"u{i}" for i in range(7)], ts=[10, 5, 30, 30, 20, 6, 40],
               labels=[1, 0, 0, 1, 1, 1, 0]).with_columns(
        pl.Series("item_row", [{"a": 3, "b": 8}[u] for u in users]))
    by_item = add_item_prior_rate(f, "like")
    by_user = add_prior_rate(f.with_columns(pl.Series("user_id", users)), "like")
    for name in ("logit", "rate", "rows"):
        assert by_item[f"prior_item_{name}"].to_list() == by_user[f"prior_{name}"].to_list()
    assert "prior_logit" not in by_item.columns


def test_prepare_adds_the_item_rate_as_two_pooled_and_one_dense_feature(tmp_path):
    from data.dataset import load_dataset
    from data.prepare import PrepareConfig, prepare
    from tests.data.contract_fixtures import write_dataset

    ds = load_dataset(write_dataset(tmp_path / "ds"))
    p = prepare(ds, PrepareConfig(item_prior_rate=True, retention=False))
    assert p.layout.dense == ("prior_logit", "prior_item_logit")
    assert list(p.layout.pooled)[-4:] == ["prior_rate", "prior_rows", "prior_item_rate",
                                          "prior_item_rows"]
    assert prepare(ds, PrepareConfig(retention=False)).layout.dense == ("prior_logit",)
