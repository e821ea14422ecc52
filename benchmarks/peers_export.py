"""Exporting a dataset prepared by our pipeline for FuxiCTR: LongCTR's loader (DIN) and flat
rows for FuxiCTR's ``NpzDataLoader`` (DNN, DeepFM).

Used by ``benchmarks/peers.py``: the same rows, features (multi-valued bags included) and
behaviour sequences for every model, with a row-by-row check that FuxiCTR rebuilds exactly our
histories.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script's helper from anywhere
    sys.path.insert(0, str(ROOT))

from benchmarks.peers_bags import bag_features, bag_max_len, bag_spec, pad_bags  # noqa: E402

PRESET = "id_only"


def _sequence_keys(user: np.ndarray, ts: np.ndarray) -> np.ndarray:
    if ts.min() < 0 or ts.max() >= 2**32:
        raise ValueError("timestamps must be in [0, 2**32) seconds")
    return (user.astype(np.int64) << 32) | ts.astype(np.int64)


def export_for_fuxictr(data_dir: Path, out: Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Prepares ``data_dir`` with our pipeline and writes FuxiCTR's input files.

    Files in ``out``: ``{train,valid,test}.parquet`` for LongCTR's DIN (one row per
    interaction: ``user_index``, ``item_index``, ``seq_len``, the single-valued pooled
    categoricals as ``our index + 1``, each multi-valued one as a padded index list
    (``benchmarks/peers_bags.py``), the dense features as they are, the primary label),
    ``{train,valid,test}.npz`` for DNN and DeepFM (the same rows and columns without the
    history ids, plus ``item_id``: the target item's vocabulary index + 1),
    ``user_info.parquet`` (``full_item_seq`` per ``user_index``: the user's positives in time
    order as item indices) and
    ``item_info.parquet`` (row ``k`` = item ``k``: ``item_id`` = our item vocabulary index + 1;
    row 0 is padding). Indices are shifted by one because
    FuxiCTR keeps row 0 of every table as a zero padding row, while our row 0 is the
    (trainable) out-of-vocabulary row.

    Returns the FuxiCTR feature/label specs (``feature_cols`` for DIN, ``flat_feature_cols``
    for DNN/DeepFM), the test rows' keys and labels and the valid rows' users and labels.
    """
    from data.dataset import load_dataset
    from data.prepare import prepare
    from recsys.config import load_train_config

    cfg = load_train_config(PRESET, overrides)  # the data section decides the split
    return export_prepared(prepare(load_dataset(data_dir), cfg.prepare_config()), out)


def export_prepared(prepared: Any, out: Path) -> dict[str, Any]:
    """``export_for_fuxictr`` on an already prepared dataset: anything with ``layout``,
    ``frame`` and ``item_index_by_row()`` like ``data.prepare.Prepared``."""
    from data.prepare import index_column

    layout, frame = prepared.layout, prepared.frame
    label = layout.labels[0]
    max_len = layout.max_history

    # The user's positives (primary label) in (ts, row_id) order: what our history draws from.
    positives = (frame.filter(pl.col(label) == 1).sort("user_key", "ts", "row_id")
                 .select("user_key", "ts", "item_row"))
    pos_keys = _sequence_keys(positives["user_key"].to_numpy(), positives["ts"].to_numpy())
    n_users = int(frame["user_key"].max()) + 1
    out.mkdir(parents=True, exist_ok=True)
    sequences = positives.group_by("user_key").agg(
        (pl.col("item_row").cast(pl.Int64) + 1).alias("full_item_seq"))  # keeps time order
    user_info = (pl.DataFrame({"user_key": np.arange(n_users, dtype=np.int64)})
                 .join(sequences, on="user_key", how="left", maintain_order="left")
                 .select(pl.col("full_item_seq").fill_null(pl.lit([], dtype=pl.List(pl.Int64)))))
    user_info.write_parquet(out / "user_info.parquet")
    # What FuxiCTR will read, flat: user u's sequence is flat[user_start[u]:][:len_u].
    flat = user_info["full_item_seq"].explode(empty_as_null=False, keep_nulls=False).to_numpy()
    lengths = user_info["full_item_seq"].list.len().to_numpy().astype(np.int64)
    user_start = np.cumsum(lengths) - lengths
    item_id = np.concatenate([[0], prepared.item_index_by_row() + 1]).astype(np.int64)
    pl.DataFrame({"item_index": np.arange(len(item_id), dtype=np.int64), "item_id": item_id}
                 ).write_parquet(out / "item_info.parquet")

    bags = bag_features(layout)
    singles = [f for f in layout.pooled if f not in bags]
    bag_len = {f: bag_max_len(frame[index_column(f)]) for f in bags}
    tests: dict[str, np.ndarray] = {}
    valids: dict[str, np.ndarray] = {}
    for split in ("train", "valid", "test"):
        rows = frame.filter(pl.col("split") == split)
        user = rows["user_key"].to_numpy().astype(np.int64)
        keys = _sequence_keys(user, rows["ts"].to_numpy())
        seq_len = np.searchsorted(pos_keys, keys, side="left") - user_start[user]
        _check_sequences(rows, user_start[user], seq_len, flat, max_len)
        cats = {f: rows[index_column(f)].to_numpy().astype(np.int64) + 1 for f in singles}
        padded = {f: pad_bags(rows[index_column(f)], bag_len[f]) for f in bags}
        dense = {f: rows[f].to_numpy().astype(np.float32) for f in layout.dense}
        y = rows[label].to_numpy().astype(np.int64)
        item_index = rows["item_row"].to_numpy().astype(np.int64) + 1
        # LongCTR (DIN): ids to look the history up with; a bag is a list column, which its
        # ParquetDataset stacks into max_len columns.
        pl.DataFrame({"user_index": user, "item_index": item_index, "seq_len": seq_len, **cats,
                      **{f: pl.Series(f, list(a), dtype=pl.List(pl.Int64))
                         for f, a in padded.items()},
                      label: y, **dense}).write_parquet(out / f"{split}.parquet")
        # Flat rows (DNN, DeepFM): the target item's id as one more categorical, no history;
        # FuxiCTR's NpzDataLoader stacks the arrays in feature_map order.
        np.savez(out / f"{split}.npz", **cats, **padded, **dense, item_id=item_id[item_index],
                 **{label: y})
        if split == "valid":  # to pick the best FuxiCTR model on, by GAUC
            valids = {"user_key": user, "y": y.astype(np.int8)}
        if split == "test":
            tests = {"row_id": rows["row_id"].to_numpy(), "user_key": user,
                     "y": rows[label].to_numpy().astype(np.int8),
                     "cold_item": rows["cold_item"].to_numpy().astype(bool)}

    meta = [{"name": n, "active": True, "dtype": "int", "type": "meta", "remap": False}
            for n in ("user_index", "item_index", "seq_len")]
    cat_specs = [{"name": f, "active": True, "dtype": "int", "type": "categorical",
                  "source": "", "vocab_size": layout.pooled[f] + 1, "remap": False}
                 for f in singles]
    bag_specs = [bag_spec(f, layout.pooled[f], bag_len[f]) for f in bags]
    # FuxiCTR embeds a numeric feature as value x a learned vector (Linear(1, D)): our
    # dense_proj, one Linear over all of them, is the same for one feature.
    dense_specs = [{"name": f, "active": True, "dtype": "float", "type": "numeric",
                    "source": ""} for f in layout.dense]
    item = {"name": "item_id", "active": True, "dtype": "int", "type": "categorical",
            "source": "item", "vocab_size": layout.item_vocab_size + 1, "remap": False}
    return {"feature_cols": meta + cat_specs + bag_specs + dense_specs + [item],
            # DNN/DeepFM: the same features and item table, the item a per-row categorical
            "flat_feature_cols": cat_specs + bag_specs + dense_specs + [{**item, "source": ""}],
            "label_col": {"name": label, "dtype": "int"},
            "label": label, "max_len": max_len, "test": tests,
            "valid": valids, "bags": bag_len,
            "rows": {s: int((frame["split"] == s).sum()) for s in ("train", "valid", "test")},
            "features": list(layout.pooled) + list(layout.dense)
            + ["item (target)", "hist_item (behaviour sequence)"]}


def _check_sequences(rows: pl.DataFrame, start: np.ndarray, seq_len: np.ndarray,
                     flat: np.ndarray, max_len: int) -> None:
    """Asserts that FuxiCTR's history (the last ``max_len`` of the user's first ``seq_len``
    positives) is our ``hist_rows``, as a set and in (reversed) order, for every row."""
    hist = rows["hist_rows"]
    ours_len = hist.list.len().to_numpy().astype(np.int64)
    want_len = np.minimum(seq_len, max_len)
    if not np.array_equal(ours_len, want_len):
        bad = int(np.flatnonzero(ours_len != want_len)[0])
        raise AssertionError(f"history length differs at row_id {rows['row_id'][bad]}")
    ours = hist.explode(empty_as_null=False, keep_nulls=False).to_numpy().astype(np.int64) + 1
    j = np.arange(ours_len.sum()) - np.repeat(np.cumsum(ours_len) - ours_len, ours_len)
    theirs = flat[np.repeat(start + seq_len - 1, ours_len) - j]  # most recent first
    if not np.array_equal(ours, theirs):
        raise AssertionError("behaviour sequences differ between our frame and the export")

