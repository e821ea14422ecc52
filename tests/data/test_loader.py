"""prepare → vocabularies, layout and frame; BatchLoader → Batch tensors and KJTs; summary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from PIL import Image

from data.batch import Batch
from data.dataset import load_dataset
from data.loader import BatchLoader
from data.prepare import PrepareConfig, index_column, prepare
from data.summary import format_summary, summarize

DAY = 86_400
N_ROWS, N_USERS, N_ITEMS = 400, 30, 40


def write_dataset(root: Path) -> Path:
    """A small contract dataset: string users, int items, two labels, one categorical of each
    kind, 30 days, two items with an image, one user missing from the user table."""
    rng = np.random.default_rng(7)
    user = rng.integers(0, N_USERS, N_ROWS)
    item = rng.integers(0, N_ITEMS, N_ROWS)
    time = rng.integers(0, 30 * DAY - 100, N_ROWS)
    item[-8:], time[-8:] = N_ITEMS, 30 * DAY - np.arange(8)  # the log's last rows: cold in test
    pl.DataFrame({
        "uid": [f"u{u}" for u in user],
        "iid": item,
        "time": time,
        "click": (rng.random(N_ROWS) < 0.5).astype(np.int64),
        "like": (rng.random(N_ROWS) < 0.3).astype(np.int64),
        "device": rng.choice(["ios", "android", "web"], N_ROWS),
    }).write_parquet(root / "interactions.parquet")
    Image.new("RGB", (4, 4), (200, 10, 10)).save(root / "a.png")
    pl.DataFrame({
        "item_id": np.arange(N_ITEMS + 1),
        "title": [f"title {i}" if i % 4 else None for i in range(N_ITEMS + 1)],
        "poster": ["a.png", "a.png", *[None] * (N_ITEMS - 1)],
        "genre": [f"g{i % 5}" for i in range(N_ITEMS + 1)],
    }).write_parquet(root / "items.parquet")
    pl.DataFrame({"user_id": [f"u{u}" for u in range(1, N_USERS)],
                  "age": [str(20 + u % 3) for u in range(1, N_USERS)]}).write_parquet(root / "users.parquet")
    (root / "dataset.toml").write_text(
        'name = "tiny"\n[interactions]\nfile = "interactions.parquet"\nuser = "uid"\nitem = "iid"\n'
        'timestamp = "time"\nlabels = ["click", "like"]\ncategorical = ["device"]\n'
        '[items]\nfile = "items.parquet"\nid = "item_id"\ntext = ["title"]\nimage = "poster"\n'
        'categorical = ["genre"]\n[users]\nfile = "users.parquet"\nid = "user_id"\n'
        'categorical = ["age"]\n')
    return root


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return prepare(load_dataset(write_dataset(tmp_path_factory.mktemp("tiny"))),
                   PrepareConfig(max_history=6))


def test_prepare_frame_vocabs_and_layout(prepared):
    frame, layout = prepared.frame, prepared.layout
    assert frame.height == N_ROWS and frame["row_id"].to_list() == list(range(N_ROWS))
    assert list(layout.pooled) == ["user", "user_age", "item_genre", "ctx_device",
                                   "prior_rate", "prior_rows"]
    train = frame.filter(pl.col("split") == "train")
    assert layout.pooled["user"] == train["user_id"].n_unique() + 1
    assert layout.pooled["user_age"] == 3 + 1 and layout.pooled["item_genre"] == 5 + 1
    assert layout.item_vocab_size == train["item_id"].n_unique() + 1
    assert layout.labels == ("click", "like") and layout.retention_labels == ("return_7d", "return_14d")
    assert layout.num_items == N_ITEMS + 1 and layout.max_history == 6
    # Ids never seen in train are OOV (0); seen ones never are.
    for name in ("user", "item"):
        idx = frame[index_column(name)]
        cold = frame[f"cold_{name}"]
        assert (idx.filter(cold) == 0).all() and (idx.filter(~cold) > 0).all()
    assert frame.filter(pl.col("item_id") == N_ITEMS)["idx_item"].to_list() == [0] * 8
    # The user missing from the user table has a null age: OOV, not an error.
    assert (frame.filter(pl.col("user_id") == "u0")["idx_user_age"] == 0).all()
    keys = frame.select("user_id", "user_key").unique()
    assert keys.height == frame["user_id"].n_unique() == keys["user_key"].n_unique()
    assert sorted(keys["user_key"].to_list()) == list(range(keys.height))
    # History is on the primary label (click) and holds item rows.
    assert frame["hist_rows"].list.len().max() == 6
    vocabs = {k: type(v).from_dict(v.to_dict()) for k, v in prepared.vocabs.items()}
    assert vocabs["item"].encode(pl.Series([N_ITEMS, 1])).to_list() == \
        prepared.vocabs["item"].encode(pl.Series([N_ITEMS, 1])).to_list()
    assert type(layout).from_dict(layout.to_dict()) == layout


def test_leave_last_out_config(prepared):
    p = prepare(prepared.dataset, PrepareConfig(split="leave_last_out", retention=False,
                                                prior_rate=False))
    assert p.layout.retention_labels == () and "return_7d" not in p.frame.columns
    assert "prior_rate" not in p.layout.pooled and "prior_rate" not in p.frame.columns
    per_user = p.frame.group_by("user_id").agg((pl.col("split") == "test").sum().alias("t"))
    assert (per_user["t"] == 1).all()
    with pytest.raises(ValueError):
        PrepareConfig(split="random")


def test_batches_match_frame(prepared):
    loader = BatchLoader(prepared, "train", batch_size=32)
    frame = prepared.frame.filter(pl.col("split") == "train")
    assert len(loader) == -(-frame.height // 32)
    batches = list(loader)
    assert len(batches) == len(loader) and sum(b.size for b in batches) == frame.height
    item_index = prepared.item_index_by_row()
    start = 0
    for batch in batches:
        assert isinstance(batch, Batch)
        rows = frame.slice(start, batch.size)
        start += batch.size
        B, L = batch.size, 6
        assert batch.pooled.keys() == list(prepared.layout.pooled)
        assert batch.pooled.lengths().tolist() == [1] * (B * len(prepared.layout.pooled))
        for key, jt in batch.pooled.to_dict().items():
            assert jt.values().tolist() == rows[index_column(key)].to_list()
        seq = batch.sequence.to_dict()
        assert batch.sequence.keys() == ["item", "hist_item"]
        assert seq["item"].values().tolist() == rows["idx_item"].to_list()
        hist = rows["hist_rows"].to_list()
        assert seq["hist_item"].lengths().tolist() == [len(h) for h in hist]
        assert seq["hist_item"].values().tolist() == [int(item_index[r]) for h in hist for r in h]
        assert batch.hist_mask.shape == (B, L) and batch.hist_item_rows.shape == (B, L)
        assert batch.hist_mask.sum(1).tolist() == [len(h) for h in hist]
        padded = [h + [0] * (L - len(h)) for h in hist]
        assert batch.hist_item_rows.tolist() == padded
        assert batch.target_item_rows.tolist() == rows["item_row"].to_list()
        assert batch.row_id.tolist() == rows["row_id"].to_list()
        assert prepared.layout.dense == ("prior_logit",)
        assert batch.dense.dtype == torch.float32 and batch.dense.shape == (B, 1)
        assert batch.dense[:, 0].tolist() == rows["prior_logit"].to_list()
        assert batch.user_key.tolist() == rows["user_key"].to_list()
        assert batch.labels["like"].dtype == torch.float32
        assert batch.labels["like"].tolist() == rows["like"].cast(pl.Float32).to_list()
        assert bool(batch.label_masks["click"].all())
        censored = rows["return_7d"].is_null().to_list()
        assert batch.label_masks["return_7d"].tolist() == [not c for c in censored]
        assert batch.labels["return_7d"].tolist() == rows["return_7d"].fill_null(0).to_list()


def test_test_split_has_censored_rows_masked(prepared):
    batch = next(iter(BatchLoader(prepared, "test", batch_size=1000)))
    assert batch.size == (prepared.frame["split"] == "test").sum()
    assert not bool(batch.label_masks["return_14d"].any())  # last 3 days of a 30-day log


def order(loader: BatchLoader) -> list[int]:
    return [r for b in loader for r in b.row_id.tolist()]


def test_shuffle_is_seeded_per_epoch(prepared):
    a = BatchLoader(prepared, "train", 50, shuffle=True, seed=3)
    b = BatchLoader(prepared, "train", 50, shuffle=True, seed=3)
    first = order(a)
    assert first == order(b) and first != order(BatchLoader(prepared, "train", 50, shuffle=True))
    a.set_epoch(1)
    second = order(a)
    assert second != first and sorted(second) == sorted(first)
    assert order(BatchLoader(prepared, "train", 50)) == sorted(first)  # no shuffle: frame order


@pytest.mark.parametrize("world_size", [2, 3])
def test_rank_shards_are_disjoint_and_equal(prepared, world_size):
    n = int((prepared.frame["split"] == "train").sum())
    for epoch in (0, 1):
        shards = []
        for rank in range(world_size):
            loader = BatchLoader(prepared, "train", 16, shuffle=True, seed=1, rank=rank,
                                 world_size=world_size)
            loader.set_epoch(epoch)
            shards.append(order(loader))
            assert len(loader) == len(list(loader))
        assert len({len(s) for s in shards}) == 1 and len(shards[0]) == n // world_size
        flat = [r for s in shards for r in s]
        assert len(set(flat)) == len(flat) == n - n % world_size
    drop = BatchLoader(prepared, "train", 16, world_size=world_size, drop_last=True)
    assert len(drop) == (n // world_size) // 16 and all(b.size == 16 for b in drop)
    with pytest.raises(ValueError):
        BatchLoader(prepared, "train", 16, rank=world_size, world_size=world_size)


def test_iter_from_is_the_tail_of_the_epoch(prepared):
    """What a resumed run trains on: the epoch's batches from there, the same rows."""
    loader = BatchLoader(prepared, "train", 32, shuffle=True, seed=2, rank=1, world_size=2)
    loader.set_epoch(1)
    full = [b.row_id.tolist() for b in loader]
    for start in (0, 3, len(full)):
        assert [b.row_id.tolist() for b in loader.iter_from(start)] == full[start:]
    with pytest.raises(ValueError, match="batch_index"):
        loader.iter_from(len(full) + 1)


def test_summary(prepared):
    s = summarize(prepared.dataset)
    assert s == summarize(prepared.dataset, prepared)  # reuses the prepared time split
    assert (s["rows"], s["items"], s["missing_media"]) == (N_ROWS, N_ITEMS + 1, 0)
    assert s["users"] == prepared.frame["user_id"].n_unique()
    assert s["image_share"] == pytest.approx(2 / 41) and s["items_without_image"] == 39
    assert s["text_share"] == pytest.approx(30 / 41)
    assert s["label_rates"]["like"] == pytest.approx(prepared.frame["like"].mean())
    test = prepared.frame.filter(pl.col("split") == "test")
    assert s["cold_test_rows"] == pytest.approx(test["cold_item"].mean())
    assert s["cold_test_rows"] > 0 and 0 < s["days"] <= 30
    text = format_summary(s)
    assert "rows" in text and "400" in text and "cold items, test rows" in text
    # Aligned: every value starts in the same column.
    assert len({len(line) - len(line.split("  ")[-1].lstrip()) for line in text.splitlines()}) == 1
