"""The FuxiCTR export of benchmarks/peers.py: the same rows and features as our prepared split."""

from __future__ import annotations

import numpy as np
import polars as pl

from benchmarks.peers_export import PRESET, export_for_fuxictr
from data.dataset import load_dataset
from data.prepare import index_column, prepare
from recsys.config import load_train_config
from tests.recsys.train_fixtures import make_world


def test_export_has_our_pooled_indices_and_dense_features(tmp_path):
    world = make_world(tmp_path)
    meta = export_for_fuxictr(world, tmp_path / "export")  # checks the histories row by row
    ours = prepare(load_dataset(world), load_train_config(PRESET).prepare_config())
    layout, frame = ours.layout, ours.frame
    specs = {c["name"]: c for c in meta["feature_cols"]}
    assert layout.dense == ("prior_logit", "prior_item_logit")
    assert all(specs[f]["type"] == "numeric" for f in layout.dense)
    for f, size in layout.pooled.items():
        assert specs[f]["type"] == "categorical" and specs[f]["vocab_size"] == size + 1
    for split in ("train", "valid", "test"):
        rows = frame.filter(pl.col("split") == split)
        exported = pl.read_parquet(tmp_path / "export" / f"{split}.parquet")
        assert exported.height == rows.height == meta["rows"][split]
        for f in layout.pooled:  # FuxiCTR keeps row 0 for padding: our index + 1
            assert np.array_equal(exported[f].to_numpy(), rows[index_column(f)].to_numpy() + 1)
        for f in layout.dense:
            assert exported[f].dtype == pl.Float32
            assert np.array_equal(exported[f].to_numpy(), rows[f].to_numpy())
        assert np.array_equal(exported["click"].to_numpy(), rows["click"].to_numpy())
    assert np.array_equal(meta["test"]["y"], frame.filter(pl.col("split") == "test")["click"])


def test_flat_rows_for_dnn_and_deepfm_are_the_same_rows_and_features(tmp_path):
    """The npz files DNN/DeepFM read: per split the same rows, every pooled categorical, the
    dense feature and the target item's id; no history ids."""
    world = make_world(tmp_path)
    meta = export_for_fuxictr(world, tmp_path / "export")
    ours = prepare(load_dataset(world), load_train_config(PRESET).prepare_config())
    layout, frame = ours.layout, ours.frame
    flat = {c["name"]: c for c in meta["flat_feature_cols"]}
    assert set(flat) == {*layout.pooled, *layout.dense, "item_id"}
    assert all(c["type"] != "meta" and c["source"] == "" for c in flat.values())
    assert flat["item_id"]["vocab_size"] == layout.item_vocab_size + 1
    item_id = ours.item_index_by_row() + 1
    for split in ("train", "valid", "test"):
        rows = frame.filter(pl.col("split") == split)
        npz = np.load(tmp_path / "export" / f"{split}.npz")
        assert set(npz.files) == {*flat, "click"}
        for f in layout.pooled:
            assert np.array_equal(npz[f], rows[index_column(f)].to_numpy() + 1)
        assert np.array_equal(npz["item_id"], item_id[rows["item_row"].to_numpy()])
        for f in layout.dense:
            assert np.array_equal(npz[f], rows[f].to_numpy())
        assert np.array_equal(npz["click"], rows["click"].to_numpy())
    valid = frame.filter(pl.col("split") == "valid")
    assert np.array_equal(meta["valid"]["user_key"], valid["user_key"].to_numpy())
