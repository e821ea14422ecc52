"""Multi-valued bags in the FuxiCTR export of benchmarks/peers.py: the same bags on both sides.

A hand-built Prepared-like frame (two users, six rows) holds ``idx_item_genres`` as a
``List(Int64)`` with bags of 0, 1 and several values (a repeat included); ``FeatureLayout.bags``
is stood in by a namespace, so the test does not wait for the data pipeline's bags to land.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest

from benchmarks.peers_bags import bag_max_len, masked_mean, pad_bags
from benchmarks.peers_export import export_prepared
from benchmarks.peers_fuxictr import PEER_VENV

BAGS = [[], [0], [3, 1, 3], [2], [1, 2], []]
ITEMS = np.array([1, 2, 3])  # item vocabulary index of each item row


def fake_prepared() -> SimpleNamespace:
    """Six rows; positives (click=1) feed the histories, most recent first (``hist_rows``)."""
    frame = pl.DataFrame({
        "row_id": np.arange(6), "user_key": [0, 0, 1, 1, 0, 1], "ts": [1, 2, 1, 3, 4, 5],
        "item_row": [0, 1, 2, 0, 1, 1], "click": [1, 0, 1, 0, 1, 0],
        "split": ["train", "train", "train", "valid", "test", "test"],
        "hist_rows": pl.Series([[], [0], [], [2], [0], [2]], dtype=pl.List(pl.Int64)),
        "cold_item": [False] * 5 + [True],
        "idx_user": [1, 1, 2, 2, 1, 2],
        "idx_item_genres": pl.Series(BAGS, dtype=pl.List(pl.Int64)),
    })
    layout = SimpleNamespace(pooled={"user": 3, "item_genres": 4}, dense=(), labels=("click",),
                             max_history=2, item_vocab_size=4, bags=("item_genres",))
    return SimpleNamespace(layout=layout, frame=frame, item_index_by_row=lambda: ITEMS)


def test_pad_bags_shifts_indices_and_pads_after_the_values() -> None:
    col = pl.Series("g", BAGS, dtype=pl.List(pl.Int64))
    assert bag_max_len(col) == 3
    assert pad_bags(col, 3).tolist() == [[0, 0, 0], [1, 0, 0], [4, 2, 4], [3, 0, 0],
                                         [2, 3, 0], [0, 0, 0]]
    assert bag_max_len(pl.Series("e", [[], []], dtype=pl.List(pl.Int64))) == 1
    with pytest.raises(ValueError, match="exceeds max_len"):
        pad_bags(col, 2)


def test_masked_mean_is_our_mean_pooling() -> None:
    """FuxiCTR's MaskedAveragePooling over the padded array = the mean of the bag's rows of our
    table (an empty bag: zeros), repeats counted twice."""
    rng = np.random.default_rng(0)
    ours = rng.normal(size=(4, 5))  # our table: row 0 = OOV
    theirs = np.vstack([np.zeros((1, 5)), ours])  # FuxiCTR's: padding row 0, then ours
    pooled = masked_mean(theirs, pad_bags(pl.Series("g", BAGS, dtype=pl.List(pl.Int64)), 3))
    for bag, got in zip(BAGS, pooled, strict=True):
        want = ours[bag].mean(axis=0) if bag else np.zeros(5)
        np.testing.assert_allclose(got, want, atol=1e-9)


def test_export_writes_bags_as_fuxictr_sequence_features(tmp_path: Path) -> None:
    meta = export_prepared(fake_prepared(), tmp_path)  # checks the histories row by row
    assert meta["bags"] == {"item_genres": 3}
    for key in ("feature_cols", "flat_feature_cols"):
        spec = {c["name"]: c for c in meta[key]}["item_genres"]
        assert spec["type"] == "sequence" and spec["vocab_size"] == 5 and spec["max_len"] == 3
        assert spec["padding"] == "post" and spec["feature_encoder"].endswith("AveragePooling()")
    padded = pad_bags(pl.Series("g", BAGS, dtype=pl.List(pl.Int64)), 3)
    for split, rows in (("train", [0, 1, 2]), ("valid", [3]), ("test", [4, 5])):
        din = pl.read_parquet(tmp_path / f"{split}.parquet")
        assert din["item_genres"].to_list() == padded[rows].tolist()
        flat = np.load(tmp_path / f"{split}.npz")
        assert flat["item_genres"].tolist() == padded[rows].tolist()
        item_rows = np.array([0, 1, 2, 0, 1, 1])[rows]
        assert flat["item_id"].tolist() == (ITEMS[item_rows] + 1).tolist()
        assert flat["user"].tolist() == (np.array([1, 1, 2, 2, 1, 2])[rows] + 1).tolist()
        assert "user_index" not in flat  # no history ids for the flat models
    assert meta["valid"]["y"].tolist() == [0]
    assert meta["test"]["row_id"].tolist() == [4, 5]


# Run inside .venv-peers: FuxiCTR 2.3.10's own FeatureProcessor, NpzDataLoader and
# FeatureEmbedding on the export; prints pooled bag embeddings and the bag table.
FUXICTR_POOLING = textwrap.dedent("""
    import json, os, sys
    import torch
    from fuxictr.features import FeatureMap
    from fuxictr.preprocess import FeatureProcessor, build_dataset
    from fuxictr.pytorch.dataloaders import RankDataLoader
    from fuxictr.pytorch.layers import FeatureEmbedding
    d, cols = sys.argv[1], json.load(open(sys.argv[2]))
    params = dict(dataset_id="bags", data_root=d, feature_cols=cols,
                  label_col={"name": "click", "dtype": "int"}, rebuild_dataset=False,
                  data_format="npz", train_data=os.path.join(d, "train.npz"),
                  valid_data=os.path.join(d, "valid.npz"), test_data=os.path.join(d, "test.npz"))
    fp = FeatureProcessor(**params)
    build_dataset(fp, **params)
    fmap = FeatureMap("bags", fp.data_dir)
    fmap.load(os.path.join(fp.data_dir, "feature_map.json"), {"embedding_dim": 4})
    emb = FeatureEmbedding(fmap, 4)
    gen = RankDataLoader(fmap, stage="train", batch_size=8, shuffle=False, **params)[0]
    batch = next(iter(gen))
    pooled = emb.embedding_layer({"item_genres": batch["item_genres"]})["item_genres"]
    table = emb.embedding_layer.embedding_layers["item_genres"].weight
    print(json.dumps({"pooled": pooled.tolist(), "table": table.tolist()}))
""")


@pytest.mark.skipif(not (PEER_VENV / "bin" / "python").is_file(),
                    reason=".venv-peers (FuxiCTR) not installed: run benchmarks/peers.py once")
def test_fuxictr_pools_the_exported_bags_as_we_do(tmp_path: Path) -> None:
    """FuxiCTR's own loader and embedding on the exported train rows: each pooled bag is the
    mean of its values' rows, padding ignored, an empty bag zero."""
    meta = export_prepared(fake_prepared(), tmp_path)
    (tmp_path / "cols.json").write_text(json.dumps(meta["flat_feature_cols"]))
    done = subprocess.run([str(PEER_VENV / "bin" / "python"), "-c", FUXICTR_POOLING,
                           str(tmp_path), str(tmp_path / "cols.json")],
                          check=True, capture_output=True, text=True)
    got = json.loads(done.stdout.strip().splitlines()[-1])
    table, pooled = np.array(got["table"]), np.array(got["pooled"])
    assert np.all(table[0] == 0)  # FuxiCTR's padding row
    for bag, row in zip(BAGS[:3], pooled, strict=True):  # the train rows
        want = table[np.array(bag, dtype=np.int64) + 1].mean(axis=0) if bag else np.zeros(4)
        np.testing.assert_allclose(row, want, rtol=1e-5, atol=1e-7)
