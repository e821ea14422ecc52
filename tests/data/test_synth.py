"""The synthetic world: contract validity, determinism, cold start, missing media, and the
signals it promises (quality → CTR, topic → click, content → topic, satisfaction → return)."""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from data.dataset import load_dataset
from data.errors import DataError
from data.synth import DAY, SynthConfig, main, simulate, synthesize
from data.synth_media import render_image, topic_vocabulary

TINY = SynthConfig(n_users=60, n_items=80, n_days=20, seed=3, cold_item_share=0.2,
                   cold_release_share=0.15)
# Big enough for signal checks to be stable, small enough to simulate in a fraction of a second.
MEDIUM = SynthConfig(n_users=600, n_items=300, n_days=40, seed=11, cold_item_share=0.2,
                     cold_release_share=0.15)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthesize(tmp_path_factory.mktemp("synth") / "world", TINY)


@pytest.fixture(scope="module")
def medium() -> tuple[SynthConfig, pl.DataFrame, object]:
    world = simulate(MEDIUM)
    rows = world.interactions.with_columns(
        world.truth,
        day=(pl.col("timestamp") - MEDIUM.start_epoch) // DAY,
    )
    return MEDIUM, rows, world


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_output_is_a_valid_contract_dataset(tiny_dir: Path) -> None:
    ds = load_dataset(tiny_dir)
    assert ds.labels == ["click", "like"] and ds.context_features == ["ctx_device"]
    assert ds.item_features == ["item_brand", "item_year"]
    assert ds.user_features == ["user_age_group", "user_region"]
    assert ds.items.height == TINY.n_items and ds.users.height == TINY.n_users
    inter = ds.interactions
    assert inter.height > 500
    assert inter["ts"].min() >= TINY.start_epoch
    assert inter["ts"].max() < TINY.start_epoch + TINY.n_days * DAY
    assert inter["ts"].is_sorted()
    assert (inter["like"] <= inter["click"]).all()  # a like needs a click
    assert 0.03 < inter["click"].mean() < 0.4
    assert set(inter["ctx_device"].unique()) <= {"mobile", "desktop", "tablet"}
    images = [p for p in ds.items["image"].to_list() if p is not None]
    assert len(images) == len(list((tiny_dir / "images").glob("*.png")))
    with Image.open(images[0]) as im:
        assert (im.format, im.size, im.mode) == ("PNG", (32, 32), "RGB")


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tiny_dir: Path, tmp_path: Path) -> None:
    first = _files(tiny_dir)
    again = _files(synthesize(tmp_path / "again", TINY))
    assert first == again
    other = _files(synthesize(tmp_path / "other", replace(TINY, seed=4)))
    assert other["interactions.parquet"] != first["interactions.parquet"]
    assert other["items.parquet"] != first["items.parquet"]
    assert other["images/5.png"] != first.get("images/5.png")


def test_cold_items_appear_only_after_their_release(tiny_dir: Path) -> None:
    world = simulate(TINY)
    cold = world.item_release_day > 0
    assert cold.sum() == round(TINY.cold_item_share * TINY.n_items)
    assert world.item_release_day[cold].min() >= TINY.cold_start_day == 17
    first_seen = load_dataset(tiny_dir).interactions.group_by("item_id").agg(pl.col("ts").min())
    first_seen = first_seen.with_columns(
        release=pl.Series(world.item_release_day[first_seen["item_id"].to_numpy() - 1]))
    early = first_seen.filter(pl.col("ts") < TINY.start_epoch + pl.col("release") * DAY)
    assert early.height == 0
    assert first_seen.filter(pl.col("release") > 0).height > 0  # cold items do get shown


def test_cold_items_are_unseen_in_the_default_time_split(medium) -> None:
    cfg, rows, world = medium
    train_items = set(rows.head(int(rows.height * 0.8))["item_id"].to_list())
    cold_ids = set((np.flatnonzero(world.item_release_day > 0) + 1).tolist())
    assert not train_items & cold_ids
    test = rows.tail(rows.height // 10)
    assert test.filter(pl.col("item_id").is_in(list(cold_ids))).height > 0.05 * test.height


def test_missing_images_and_descriptions_are_null(tmp_path: Path) -> None:
    cfg = replace(TINY, missing_image_share=0.25, missing_description_share=0.25)
    root = synthesize(tmp_path / "w", cfg)
    items = pl.read_parquet(root / "items.parquet")
    no_image = items.filter(pl.col("image").is_null())
    assert 0.1 * cfg.n_items < no_image.height < 0.4 * cfg.n_items
    assert not any((root / "images" / f"{i}.png").exists() for i in no_image["item_id"])
    assert items["description"].null_count() > 0 and items["title"].null_count() == 0
    loaded = load_dataset(root).items  # nulls are missing media, not errors
    assert loaded["image"].null_count() == no_image.height
    assert loaded["text"].null_count() == 0


def test_hidden_quality_drives_item_ctr(medium) -> None:
    _, rows, world = medium
    per_item = rows.group_by("item_id").agg(pl.col("click").mean().alias("ctr"), pl.len().alias("n"))
    per_item = per_item.filter(pl.col("n") >= 30)
    per_item = per_item.with_columns(
        quality=pl.Series(world.item_quality[per_item["item_id"].to_numpy() - 1]))
    assert per_item.height > 150
    rho = per_item.select(pl.corr("quality", "ctr", method="spearman")).item()
    assert rho > 0.6


def test_topic_affinity_drives_clicks_also_for_cold_items(medium) -> None:
    _, rows, world = medium
    cold_ids = (np.flatnonzero(world.item_release_day > 0) + 1).tolist()
    for part in (rows, rows.filter(pl.col("item_id").is_in(cold_ids))):
        lo, hi = part["affinity"].quantile(1 / 3), part["affinity"].quantile(2 / 3)
        ctr_low = part.filter(pl.col("affinity") <= lo)["click"].mean()
        ctr_high = part.filter(pl.col("affinity") >= hi)["click"].mean()
        assert ctr_high > 2 * ctr_low, (ctr_low, ctr_high)


def test_content_shows_topic_but_not_quality(medium) -> None:
    cfg, _, world = medium
    n = cfg.n_items
    images = np.stack([
        render_image(int(world.item_topic[i]), world.item_style[i], cfg.n_topics, cfg.image_size,
                     cfg.image_noise, np.random.default_rng([cfg.seed, 100, i])) for i in range(n)
    ]).reshape(n, -1, 3).astype(np.float64) / 255
    # The colour of the most saturated pixels (the shape) separates topics; nearest class mean
    # fitted on half the items, scored on the other half.
    saturation = images.max(-1) - images.min(-1)
    vivid = saturation >= np.quantile(saturation, 0.8, axis=1, keepdims=True)
    colour = (images * vivid[..., None]).sum(1)
    colour /= colour.sum(1, keepdims=True)  # chromaticity: brightness is style, not topic
    fit, held = np.arange(n) % 2 == 0, np.arange(n) % 2 == 1
    means = np.stack([colour[fit & (world.item_topic == t)].mean(0) for t in range(cfg.n_topics)])
    pred = ((colour[held, None, :] - means[None]) ** 2).sum(-1).argmin(1)
    assert (pred == world.item_topic[held]).mean() > 0.85  # chance is 1/12
    # Least squares of quality on pixel colour statistics explains (almost) nothing.
    feats = np.column_stack([images.mean(1), images.std(1), colour, np.ones(n)])
    coef, *_ = np.linalg.lstsq(feats, world.item_quality, rcond=None)
    r2 = 1 - ((world.item_quality - feats @ coef) ** 2).sum() / ((world.item_quality - world.item_quality.mean()) ** 2).sum()
    assert r2 < 0.1
    titles = world.items["title"].str.to_lowercase().to_list()
    _, vocab = topic_vocabulary(cfg.n_topics)
    own = np.mean([any(w in t.split() for w in vocab[k]) for t, k in zip(titles, world.item_topic, strict=True)])
    assert own > 0.8


def test_satisfying_sessions_bring_users_back(medium) -> None:
    cfg, rows, _ = medium
    sessions = rows.group_by("user_id", "day").agg(
        sat=(pl.col("click").sum() + 2 * pl.col("like").sum()) / pl.len())
    later = sessions.select("user_id", later_day="day")
    returned = (
        sessions.join(later, on="user_id")
        .filter((pl.col("later_day") > pl.col("day")) & (pl.col("later_day") <= pl.col("day") + 7))
        .select("user_id", "day").unique().with_columns(returned=pl.lit(1))
    )
    uncensored = sessions.filter(pl.col("day") + 7 <= cfg.n_days - 1).join(
        returned, on=["user_id", "day"], how="left").with_columns(pl.col("returned").fill_null(0))
    median = uncensored["sat"].median()
    low = uncensored.filter(pl.col("sat") <= median)["returned"].mean()
    high = uncensored.filter(pl.col("sat") > median)["returned"].mean()
    assert high > low + 0.15, (low, high)


def test_default_world_has_the_documented_size() -> None:
    world = simulate(SynthConfig())
    rows = world.interactions
    assert 150_000 <= rows.height <= 250_000
    assert rows["user_id"].n_unique() == 1600
    assert 0.08 < rows["click"].mean() < 0.25 and 0.03 < rows["like"].mean() < 0.15


def test_refuses_a_non_empty_out_dir_unless_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "world"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty"):
        synthesize(out, TINY)
    assert (out / "notes.txt").read_text() == "mine"
    synthesize(out, TINY, overwrite=True)
    assert not (out / "notes.txt").exists() and (out / "dataset.toml").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["world"]  # no temporary left behind
    empty = tmp_path / "empty"
    empty.mkdir()
    assert synthesize(empty, TINY) == empty


@pytest.mark.parametrize("bad", [{"n_users": 0}, {"cold_item_share": 1.5}, {"session_max": 200},
                                 {"activity_mean": 1.0}])
def test_rejects_bad_knobs(bad: dict) -> None:
    with pytest.raises(DataError, match=next(iter(bad))):
        SynthConfig(**bad)


def test_command_line_maps_short_flags(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    assert main(["--out", str(out), "--users", "20", "--items", "30", "--days", "5", "--seed", "9"]) == 0
    ds = load_dataset(out)
    assert ds.items.height == 30 and ds.users.height == 20
    assert ds.interactions["ts"].max() < SynthConfig().start_epoch + 5 * DAY
    assert main(["--out", str(out)]) == 2  # not empty


def test_docs_describe_every_knob_with_its_default() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "synthetic_world.md").read_text()
    table = {}
    for line in doc.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            table[cells[0].split("`")[1]] = cells[1]
    assert {f.name: str(f.default) for f in fields(SynthConfig)} == table
