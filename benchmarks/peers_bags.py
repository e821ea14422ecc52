"""Multi-valued categorical features ("bags") exported as FuxiCTR ``sequence`` features.

Our side: ``Prepared.frame`` holds ``idx_<F>``, a ``List(Int64)`` of vocabulary indices per row
(0 = OOV, possibly empty, repeats kept); the ranking model mean-pools the bag's embeddings (an
empty bag pools to zeros).

FuxiCTR 2.3.10's side: a ``sequence`` feature is one ``nn.Embedding`` with ``padding_idx=0``
followed by its ``feature_encoder``, ``MaskedAveragePooling`` by default (sum over the slots /
number of non-zero slots, so 0 for an all-padding row). Its ``FeatureProcessor`` would turn a
``"^"``-joined string (or a list, joined first) into a ``max_len``-wide index array padded with
0 at the end (``padding="post"``, the default of ``fit_sequence_col``). We hand it that array
already encoded (``rebuild_dataset=False``, as for every other feature here): our index + 1,
because FuxiCTR's row 0 is padding while our row 0 is the trainable OOV row, then zeros.
``max_len`` is the longest bag of any split, so no bag is cut and both libraries pool the same
values with the same multiplicities.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

# FuxiCTR's defaults for a sequence feature, written out so the spec says what it does.
POOLING = "layers.MaskedAveragePooling()"
PADDING = "post"
SPLITTER = "^"


def bag_features(layout: Any) -> tuple[str, ...]:
    """The layout's multi-valued pooled features (``FeatureLayout.bags``; none before it)."""
    return tuple(getattr(layout, "bags", ()))


def bag_max_len(column: pl.Series) -> int:
    """Width of the exported array: the longest bag, at least 1 (a zero-width column would
    leave FuxiCTR's column index without a slot for the feature)."""
    longest = column.list.len().max()
    return max(1, int(longest or 0))


def pad_bags(column: pl.Series, max_len: int) -> np.ndarray:
    """``List(Int64)`` of our indices -> (rows, max_len) int64: index + 1, then 0 padding.

    Raises ValueError when a bag is longer than ``max_len`` (it would be cut: the two
    libraries would no longer see the same bag).
    """
    lengths = column.list.len().fill_null(0).to_numpy().astype(np.int64)
    if lengths.size and lengths.max() > max_len:
        raise ValueError(f"{column.name}: a bag of {lengths.max()} values exceeds max_len "
                         f"{max_len}")
    out = np.zeros((len(column), max_len), dtype=np.int64)
    values = column.explode(empty_as_null=False, keep_nulls=False).to_numpy().astype(np.int64)
    rows = np.repeat(np.arange(len(column)), lengths)
    slots = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    out[rows, slots] = values + 1
    return out


def bag_spec(name: str, vocab_size: int, max_len: int) -> dict[str, Any]:
    """FuxiCTR ``feature_cols`` entry: a sequence feature of pre-encoded indices, our
    vocabulary plus FuxiCTR's padding row 0, mean-pooled."""
    return {"name": name, "active": True, "dtype": "str", "type": "sequence", "source": "",
            "vocab_size": vocab_size + 1, "max_len": max_len, "padding": PADDING,
            "splitter": SPLITTER, "feature_encoder": POOLING, "remap": False}


def masked_mean(table: np.ndarray, padded: np.ndarray) -> np.ndarray:
    """What ``MaskedAveragePooling`` computes over ``table[padded]`` when row 0 of ``table``
    is zero (numpy; used by the tests to check the export end to end)."""
    emb = table[padded]
    mask = emb.sum(axis=-1) != 0
    return emb.sum(axis=1) / (mask.sum(axis=-1, keepdims=True) + 1e-12)
