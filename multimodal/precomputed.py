"""Precomputed item vectors (one vector per item and modality, MMRec style).

Such a vector enters the cache as a length-1 token sequence. Two file forms:

- ``.npy``: a 2-D float array M x D whose row ``i`` belongs to the item whose (integer) id is
  ``i``, the MMRec convention (``image_feat.npy``, ``text_feat.npy``);
- ``.parquet``: a column ``item_id`` and exactly one vector column (list or array of floats).

An item is *missing* the modality (masked, never a fake zero vector) when it has no row, when
its vector is null, holds a NaN, or is exactly all zeros (the filler MMRec-style dumps use for
items without media).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from data.errors import DataError, Problem

KEY = "item_id"


def _usable(vectors: np.ndarray) -> np.ndarray:
    """N bool: rows that are real content (finite and not all zero)."""
    return np.isfinite(vectors).all(axis=1) & (np.abs(vectors).sum(axis=1) > 0)


def _from_npy(path: Path, item_ids: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    table = np.load(path, mmap_mode="r", allow_pickle=False)
    if table.ndim != 2 or not np.issubdtype(table.dtype, np.number):
        raise DataError(Problem(str(path), f"expected a 2-D numeric array (items x dim), got shape "
                                f"{table.shape} dtype {table.dtype}"))
    if not item_ids.dtype.is_integer():
        raise DataError(Problem(str(path), "an .npy vector file is keyed by integer item id (row i = "
                                "item i); item ids here are strings, use a Parquet file with an "
                                f"'{KEY}' column instead", column=KEY))
    ids = item_ids.to_numpy()
    present = (ids >= 0) & (ids < table.shape[0])
    out = np.zeros((len(ids), table.shape[1]), dtype=np.float32)
    out[present] = table[ids[present]]
    return out, present


def _from_parquet(path: Path, item_ids: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    df = pl.read_parquet(path)
    if KEY not in df.columns:
        raise DataError(Problem(str(path), f"missing key column '{KEY}' (columns: {df.columns})",
                                column=KEY))
    others = [c for c in df.columns if c != KEY]
    if len(others) != 1:
        raise DataError(Problem(str(path), f"expected exactly one vector column besides '{KEY}', "
                                f"found {others}"))
    col = others[0]
    if not isinstance(df.schema[col], pl.List | pl.Array):
        raise DataError(Problem(str(path), f"vector column must be a list of floats, found "
                                f"{df.schema[col]}", column=col))
    dup = df[KEY].is_duplicated()
    if dup.any():
        row = int(dup.arg_max()) + 1
        raise DataError(Problem(str(path), f"duplicate item id '{df[KEY][row - 1]}'", column=KEY, row=row))
    try:
        df = df.with_columns(pl.col(KEY).cast(item_ids.dtype, strict=True))
    except pl.exceptions.InvalidOperationError as exc:
        raise DataError(Problem(str(path), f"item ids cannot be matched with the item table's "
                                f"{item_ids.dtype} ids", column=KEY)) from exc
    lengths = df[col].list.len() if isinstance(df.schema[col], pl.List) else None
    if lengths is not None and lengths.drop_nulls().n_unique() > 1:
        raise DataError(Problem(str(path), "vectors differ in length", column=col))
    joined = pl.DataFrame({KEY: item_ids}).join(df, on=KEY, how="left", maintain_order="left")
    vec = joined[col]
    present = vec.is_not_null().to_numpy()
    dim = int(lengths.drop_nulls()[0]) if lengths is not None else df.schema[col].size
    out = np.zeros((len(item_ids), dim), dtype=np.float32)
    if present.any():
        out[present] = np.asarray(vec.filter(vec.is_not_null()).to_list(), dtype=np.float32)
    return out, present


def load_vectors(path: str | Path, item_ids: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """Vectors of the items ``item_ids`` (N, in item-table order) from a vector file.

    Returns (vectors N x D float32 with zeros where missing, present N bool).

    Raises:
        DataError: the file's layout does not match the forms in the module docstring.
    """
    path = Path(path)
    vectors, present = (_from_npy if path.suffix.lower() == ".npy" else _from_parquet)(path, item_ids)
    present &= _usable(vectors)
    vectors[~present] = 0.0
    return vectors, present
