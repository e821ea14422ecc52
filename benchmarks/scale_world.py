"""A lean, ID-only contract dataset of any size, generated and written in blocks (no images).

The scale benchmark (``benchmarks/scale.py``) needs logs of 1M to 100M interactions that never
sit in memory whole. ``write_log`` writes one block of ``block_rows`` rows at a time as one
Parquet row group, so the generator's memory is a block's, whatever ``n_rows`` is.

The world: users with a lognormal activity, a click propensity and a favourite category;
items with a lognormal popularity, a quality and a category and brand; each impression
picks a user by activity and an item by popularity, and is clicked with probability
``sigmoid(base + user_bias + item_quality + affinity * [category is the user's favourite]
+ device effect)``, so user and item IDs, their categoricals and the device all carry signal.
Timestamps increase over ``n_days``: block ``b`` covers its share of the span and its rows are
in time order, so the whole log is in time order (and each user's rows with it); ``row_id``
(the source row order) agrees with time.

Deterministic: the user and item tables come from ``(seed, 0)``, block ``b`` from
``(seed, 1, b)``; the same config gives the same rows whatever writes them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from data.spec import DatasetSpec, InteractionsSpec, ItemsSpec, UsersSpec, spec_to_toml

DAY = 86_400
DEVICES = ("mobile", "desktop", "tablet")
DEVICE_SHARE = np.array([0.6, 0.3, 0.1])
DEVICE_EFFECT = np.array([0.0, -0.3, 0.2])  # click logit offset per device
AGE_GROUPS = ("18-24", "25-34", "35-44", "45-54", "55+")
REGIONS = ("north", "south", "east", "west", "central")
WORLD_FILE = "scale_world.json"  # the config that wrote the directory, so a rerun can reuse it


@dataclass(frozen=True)
class ScaleWorldConfig:
    """The knobs of the scale world; users and items default to a share of the rows.

    Attributes:
        n_rows: interactions in the log.
        n_users: users (0 = ``n_rows // 100``, at least 100).
        n_items: items (0 = ``n_rows // 500``, at least 100).
        n_days: days the timestamps span.
        n_categories: item categories (each user has a favourite one).
        block_rows: rows generated and written at once (one Parquet row group); part of the
            world's identity, since block ``b``'s rows are drawn from ``(seed, 1, b)``.
        seed: seed of every draw.
        start_epoch: timestamp of day 0.
        click_base, affinity: click logit intercept and the favourite-category bonus.
        user_bias_sd, item_quality_sd: spread of the user and item click propensities.
    """

    n_rows: int
    n_users: int = 0
    n_items: int = 0
    n_days: int = 60
    n_categories: int = 20
    block_rows: int = 1 << 20
    seed: int = 0
    start_epoch: int = 1_704_067_200
    click_base: float = -2.0
    affinity: float = 1.2
    user_bias_sd: float = 0.5
    item_quality_sd: float = 0.8

    def __post_init__(self) -> None:
        if self.n_rows < 1 or self.block_rows < 1 or self.n_days < 1 or self.n_categories < 1:
            raise ValueError(f"n_rows, block_rows, n_days and n_categories must be >= 1: {self}")

    @property
    def users(self) -> int:
        return self.n_users or max(100, self.n_rows // 100)

    @property
    def items(self) -> int:
        return self.n_items or max(100, self.n_rows // 500)

    @property
    def blocks(self) -> int:
        return math.ceil(self.n_rows / self.block_rows)


@dataclass(frozen=True)
class _Latents:
    """Per-user and per-item hidden draws (n_users and n_items long)."""

    user_cdf: np.ndarray  # cumulative activity share, float64
    user_bias: np.ndarray
    user_favourite: np.ndarray
    item_cdf: np.ndarray
    item_quality: np.ndarray
    item_category: np.ndarray


def _latents(cfg: ScaleWorldConfig) -> _Latents:
    rng = np.random.default_rng([cfg.seed, 0])
    activity = rng.lognormal(0.0, 1.0, cfg.users)
    popularity = rng.lognormal(0.0, 1.5, cfg.items)
    return _Latents(
        user_cdf=np.cumsum(activity) / activity.sum(),
        user_bias=rng.normal(0.0, cfg.user_bias_sd, cfg.users),
        user_favourite=rng.integers(0, cfg.n_categories, cfg.users),
        item_cdf=np.cumsum(popularity) / popularity.sum(),
        item_quality=rng.normal(0.0, cfg.item_quality_sd, cfg.items),
        item_category=rng.integers(0, cfg.n_categories, cfg.items),
    )


def item_table(cfg: ScaleWorldConfig) -> pl.DataFrame:
    """``item_id`` (Int64, 1..n), ``category`` and ``brand`` (String)."""
    lat = _latents(cfg)
    brands = max(10, cfg.items // 50)
    brand = np.random.default_rng([cfg.seed, 2]).integers(0, brands, cfg.items)
    return pl.DataFrame({
        "item_id": np.arange(1, cfg.items + 1, dtype=np.int64),
        "category": [f"c{c}" for c in lat.item_category],
        "brand": [f"b{b}" for b in brand],
    })


def user_table(cfg: ScaleWorldConfig) -> pl.DataFrame:
    """``user_id`` (Int64, 1..n), ``age_group`` and ``region`` (String)."""
    rng = np.random.default_rng([cfg.seed, 3])
    return pl.DataFrame({
        "user_id": np.arange(1, cfg.users + 1, dtype=np.int64),
        "age_group": np.array(AGE_GROUPS)[rng.integers(0, len(AGE_GROUPS), cfg.users)],
        "region": np.array(REGIONS)[rng.integers(0, len(REGIONS), cfg.users)],
    })


def _block(cfg: ScaleWorldConfig, lat: _Latents, b: int) -> pl.DataFrame:
    """Rows ``[b * block_rows, min((b + 1) * block_rows, n_rows))`` of the log, in time order."""
    first = b * cfg.block_rows
    size = min(cfg.block_rows, cfg.n_rows - first)
    rng = np.random.default_rng([cfg.seed, 1, b])
    # Block b covers its rows' share of the span, so the event rate is uniform in time.
    span = cfg.n_days * DAY
    lo = cfg.start_epoch + span * first // cfg.n_rows
    hi = cfg.start_epoch + span * (first + size) // cfg.n_rows
    ts = np.sort(rng.integers(lo, max(hi, lo + 1), size))
    # Clipped: the last cdf entry can round to just under 1.
    user = np.minimum(np.searchsorted(lat.user_cdf, rng.random(size)), cfg.users - 1)
    item = np.minimum(np.searchsorted(lat.item_cdf, rng.random(size)), cfg.items - 1)
    device = np.searchsorted(np.cumsum(DEVICE_SHARE), rng.random(size) * DEVICE_SHARE.sum())
    device = np.minimum(device, len(DEVICES) - 1)
    logit = (cfg.click_base + lat.user_bias[user] + lat.item_quality[item]
             + cfg.affinity * (lat.user_favourite[user] == lat.item_category[item])
             + DEVICE_EFFECT[device])
    click = rng.random(size) < 1.0 / (1.0 + np.exp(-logit))
    return pl.DataFrame({
        "user_id": user.astype(np.int64) + 1,
        "item_id": item.astype(np.int64) + 1,
        "timestamp": ts.astype(np.int64),
        "device": np.array(DEVICES)[device],
        "click": click.astype(np.int8),
    })


def blocks(cfg: ScaleWorldConfig) -> Iterator[pl.DataFrame]:
    """The log's blocks in order (each ``block_rows`` rows, the last one the rest)."""
    lat = _latents(cfg)
    for b in range(cfg.blocks):
        yield _block(cfg, lat, b)


def dataset_spec() -> DatasetSpec:
    return DatasetSpec(
        name="scale_world",
        interactions=InteractionsSpec(file="interactions.parquet", user="user_id", item="item_id",
                                      timestamp="timestamp", labels=["click"],
                                      categorical=["device"]),
        items=ItemsSpec(file="items.parquet", id="item_id", categorical=["category", "brand"]),
        users=UsersSpec(file="users.parquet", id="user_id", categorical=["age_group", "region"]),
    )


def write_log(out_dir: Path, cfg: ScaleWorldConfig) -> Path:
    """Writes the contract dataset (dataset.toml, interactions/items/users.parquet and
    ``scale_world.json``) to ``out_dir``, one block in memory at a time; returns ``out_dir``.

    The config file is written last, so a directory with it is complete (``existing_world``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / WORLD_FILE).unlink(missing_ok=True)
    (out_dir / "dataset.toml").write_text(spec_to_toml(dataset_spec()), encoding="utf-8")
    item_table(cfg).write_parquet(out_dir / "items.parquet")
    user_table(cfg).write_parquet(out_dir / "users.parquet")
    writer = None
    try:
        for frame in blocks(cfg):
            table = frame.to_arrow()
            if writer is None:
                writer = pq.ParquetWriter(out_dir / "interactions.parquet", table.schema,
                                          compression="zstd")
            writer.write_table(table, row_group_size=cfg.block_rows)
    finally:
        if writer is not None:
            writer.close()
    (out_dir / WORLD_FILE).write_text(json.dumps(asdict(cfg), indent=1) + "\n")
    return out_dir


def existing_world(out_dir: Path, cfg: ScaleWorldConfig) -> bool:
    """Whether ``out_dir`` holds a complete dataset written by ``write_log`` with ``cfg``."""
    path = Path(out_dir) / WORLD_FILE
    return path.is_file() and json.loads(path.read_text()) == asdict(cfg)
