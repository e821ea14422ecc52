"""benchmarks/scale_world.py and scale_checks.py: the scale benchmark's generator and checks."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from benchmarks.scale_checks import growth_plot, rank_coverage
from benchmarks.scale_world import (
    DAY,
    ScaleWorldConfig,
    _latents,
    blocks,
    existing_world,
    item_table,
    user_table,
    write_log,
)
from data.dataset import load_dataset

# 4 blocks, the last one partial, so block boundaries are crossed.
SMALL = ScaleWorldConfig(n_rows=3_500, block_rows=1_000, n_users=300, n_items=150)


def test_written_log_is_the_blocks_in_order_one_row_group_each(tmp_path) -> None:
    write_log(tmp_path, SMALL)
    written = pl.read_parquet(tmp_path / "interactions.parquet")
    assert written.equals(pl.concat(list(blocks(SMALL))))
    assert written.height == SMALL.n_rows
    assert pq.ParquetFile(tmp_path / "interactions.parquet").metadata.num_row_groups == 4


def test_same_config_same_rows_other_seed_other_rows(tmp_path) -> None:
    first = pl.concat(list(blocks(SMALL)))
    assert first.equals(pl.concat(list(blocks(SMALL))))
    other = pl.concat(list(blocks(dataclasses.replace(SMALL, seed=1))))
    assert not first.equals(other)
    assert item_table(SMALL).equals(item_table(SMALL))
    assert user_table(SMALL).equals(user_table(SMALL))


def test_log_is_a_contract_dataset_in_time_order(tmp_path) -> None:
    write_log(tmp_path, SMALL)
    ds = load_dataset(tmp_path)
    inter = ds.interactions
    assert inter.height == SMALL.n_rows
    ts = inter["ts"].to_numpy()
    # Time order across blocks, so row_id (source order) agrees with time for every user.
    assert np.all(np.diff(ts) >= 0)
    assert ts.min() >= SMALL.start_epoch and ts.max() < SMALL.start_epoch + SMALL.n_days * DAY
    assert ts.max() - ts.min() > (SMALL.n_days - 1) * DAY  # the span is covered
    assert ds.item_features == ["item_category", "item_brand"]
    assert ds.user_features == ["user_age_group", "user_region"]
    assert set(inter["ctx_device"].unique()) == {"mobile", "desktop", "tablet"}


def test_clicks_carry_the_planted_signal() -> None:
    cfg = ScaleWorldConfig(n_rows=60_000, n_users=500, n_items=300)
    log = pl.concat(list(blocks(cfg)))
    lat = _latents(cfg)
    users = log["user_id"].to_numpy() - 1
    items = log["item_id"].to_numpy() - 1
    click = log["click"].to_numpy().astype(float)
    favourite = lat.user_favourite[users] == lat.item_category[items]
    # The favourite-category bonus and the item quality both raise the click rate.
    assert click[favourite].mean() > click[~favourite].mean() + 0.05
    good = lat.item_quality[items] > 0
    assert click[good].mean() > click[~good].mean() + 0.05
    # Activity is skewed: the busiest tenth of users make far more than a tenth of rows.
    per_user = np.bincount(users, minlength=cfg.users)
    assert np.sort(per_user)[-cfg.users // 10:].sum() > 0.25 * len(users)


def test_existing_world_is_recognised_only_for_its_own_config(tmp_path) -> None:
    assert not existing_world(tmp_path, SMALL)
    write_log(tmp_path, SMALL)
    assert existing_world(tmp_path, SMALL)
    assert not existing_world(tmp_path, dataclasses.replace(SMALL, seed=3))


def test_rank_coverage_accepts_a_disjoint_cover_and_catches_overlaps_and_gaps() -> None:
    split = np.arange(100, 211)  # 111 rows: 2 ranks drop one
    ok = rank_coverage([split[:55], split[55:110]], split)
    assert ok["ok"] and ok["overlap"] == 0 and ok["missing"] == 1 and ok["read_rows"] == [55, 55]

    overlap = rank_coverage([split[:56], split[55:110]], split)
    assert not overlap["ok"] and overlap["overlap"] == 1

    twice_in_one_rank = rank_coverage([np.r_[split[:55], split[0]], split[55:]], split)
    assert not twice_in_one_rank["ok"] and twice_in_one_rank["overlap"] == 1

    gap = rank_coverage([split[:50], split[55:110]], split)
    assert not gap["ok"] and gap["missing"] == 6

    foreign = rank_coverage([split[:55], np.r_[split[55:110], 999]], split)
    assert not foreign["ok"] and foreign["foreign"] == 1


def test_rank_coverage_allows_dropped_last_batches_only_when_told() -> None:
    split = np.arange(111)
    # Batches of 10: each rank reads 5 whole batches of its 55 rows and drops 5.
    per_rank = [split[:50], split[55:105]]
    assert not rank_coverage(per_rank, split)["ok"]
    dropped = rank_coverage(per_rank, split, batch_size=10)
    assert dropped["ok"] and dropped["missing"] == 11 and dropped["missing_allowed"] == 19
    assert not rank_coverage([split[:40], split[55:105]], split, batch_size=10)["ok"]


def test_growth_plot_is_written(tmp_path) -> None:
    rows = [{"rows": n, "prep_peak_rss_mb": 100.0 * k, "prep_s": 10.0 * k,
             "train1_peak_rss_mb": 50.0, "train2_peak_rss_mb": 40.0}
            for k, n in enumerate((10**6, 10**7), start=1)]
    path = growth_plot(rows, tmp_path / "growth.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("bad", [{"n_rows": 0}, {"n_rows": 5, "block_rows": 0}])
def test_config_refuses_empty_sizes(bad) -> None:
    with pytest.raises(ValueError):
        ScaleWorldConfig(**bad)


def test_row_counts_parse_and_label() -> None:
    from benchmarks.scale import parse_rows, rows_label

    assert [parse_rows(t) for t in ("1M", "250k", "1000000", "2.5m")] == [10**6, 250_000, 10**6,
                                                                          2_500_000]
    assert [rows_label(n) for n in (10**6, 10**8, 250_000, 1234)] == ["1M", "100M", "250k", "1234"]


def test_targets_follow_the_recorded_figures() -> None:
    from benchmarks.scale import PREP_RSS_MB, TRAIN_RSS_MB, build_targets

    row = {"size": "1M", "prep_peak_rss_mb": PREP_RSS_MB + 1, "train1_peak_rss_mb": 100,
           "train2_peak_rss_mb": TRAIN_RSS_MB}
    compare = {"rows": 10**7, "stream_over_memory_train": 0.89}
    met = {t["name"]: t["met"] for t in build_targets([row], {"ok": True}, compare)}
    assert met == {"1M: preparation peak RSS (MiB)": False,
                   "1M: training peak RSS per process (MiB)": True,
                   "10M: streamed / in-memory training samples/s (interleaved rounds)": False,
                   "2 processes read disjoint rows covering the epoch (1 = yes)": True}
