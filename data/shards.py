"""Prepared shards: the model-ready rows of ``prepare`` written as Parquet per (split, user
bucket), and read back (docs/prepared_shards.md).

``split_frame_to_shard`` and ``write_split_file`` are the one schema and the one Parquet writer
that every polars-based writer uses, so the in-memory and the bounded-memory preparation write
byte-identical files for the same rows. ``load_prepared`` reads shards back into an in-memory
``Prepared`` (evaluation, tests, small data); ``data.stream.ShardStream`` streams them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import polars as pl

from data.batch import ITEM_FEATURE, RETENTION_COUNTS, RETENTION_LABELS, FeatureLayout
from data.dataset import Dataset
from data.errors import DataError, Problem
from data.prepare import Prepared, index_column
from data.sequences import HISTORY_COLUMN
from data.shard_manifest import (
    DEFAULT_BUCKETS,
    ITEMS_FILE,
    MANIFEST_FILE,
    SHARD_FORMAT,
    SHARD_SCHEMA_VERSION,
    SHARD_SPLITS,
    ShardManifest,
    manifest_dict,
    manifest_json,
    part_path,
    read_manifest,
)
from data.spec import parse_spec, spec_to_toml

__all__ = ["DEFAULT_BUCKETS", "SHARD_FORMAT", "SHARD_SCHEMA_VERSION", "id_dtype", "items_frame",
           "load_prepared", "read_manifest", "shard_columns", "split_frame_to_shard",
           "write_shards", "write_split_file"]

# Fixed Parquet settings, so the same rows give the same bytes (with the same polars
# version) when built by the same operations: the writer's pages of a list column follow how
# its buffers lie, so a writer that must match ``write_shards`` byte for byte filters by split,
# then sorts by row_id, as it does. Row groups are physical only (the reader cuts blocks by
# position), so their size is a file-size and read-granularity choice, not the contract.
PARQUET_COMPRESSION = "zstd"
PARQUET_COMPRESSION_LEVEL = 3
ROW_GROUP_ROWS = 65_536
BAG_INDEX_DTYPE = pl.List(pl.Int64)


def id_dtype(dtype: pl.DataType) -> pl.DataType:
    """A shard's ``user_id`` / ``item_id`` type: Int64 for any integer source id, else String."""
    return pl.Int64 if dtype.is_integer() else pl.String


def shard_columns(layout: FeatureLayout, user_id_dtype: pl.DataType = pl.Int64,
                  item_id_dtype: pl.DataType = pl.Int64) -> dict[str, pl.DataType]:
    """The columns of a split file, name → dtype, in file order (docs/prepared_shards.md).

    ``user_id_dtype`` / ``item_id_dtype``: Int64 or String (``id_dtype`` of the source ids).
    """
    bags = set(layout.bags)
    cols: dict[str, pl.DataType] = {
        "row_id": pl.Int64, "user_id": user_id_dtype, "item_id": item_id_dtype, "ts": pl.Int64,
        "user_key": pl.Int64, "item_row": pl.Int64, index_column(ITEM_FEATURE): pl.Int64,
    }
    cols |= {index_column(f): BAG_INDEX_DTYPE if f in bags else pl.Int64 for f in layout.pooled}
    cols[HISTORY_COLUMN] = pl.List(pl.Int64)
    cols |= {label: pl.Int8 for label in layout.labels}
    if layout.retention_labels:
        cols |= {r: pl.Int8 for r in RETENTION_LABELS} | {c: pl.Int32 for c in RETENTION_COUNTS}
    cols |= {"cold_item": pl.Boolean, "cold_user": pl.Boolean}
    cols |= {d: pl.Float32 for d in layout.dense}
    return cols


def split_frame_to_shard(frame: pl.DataFrame, layout: FeatureLayout) -> pl.DataFrame:
    """``frame`` (``Prepared.frame`` rows, any extra columns) → exactly the shard columns, cast
    to the shard dtypes, in file order; row order kept."""
    columns = shard_columns(layout, id_dtype(frame.schema["user_id"]), id_dtype(frame.schema["item_id"]))
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"frame lacks shard columns {missing}")
    return frame.select(pl.col(c).cast(t) for c, t in columns.items())


def write_split_file(frame: pl.DataFrame, path: str | Path) -> None:
    """THE Parquet writer of shard files (and items.parquet): fixed compression, row-group
    size and statistics, one chunk, so the same rows give the same bytes."""
    frame.rechunk().write_parquet(
        path, compression=PARQUET_COMPRESSION, compression_level=PARQUET_COMPRESSION_LEVEL,
        statistics=True, row_group_size=ROW_GROUP_ROWS, use_pyarrow=False)


def items_frame(prepared: Prepared) -> pl.DataFrame:
    """``items.parquet``: item_row, item_id, idx_item (0 = never in train), in item_row order."""
    items = prepared.dataset.items
    return pl.DataFrame({
        "item_row": items["item_row"].cast(pl.Int64),
        "item_id": items["item_id"].cast(id_dtype(items.schema["item_id"])),
        index_column(ITEM_FEATURE): prepared.vocabs[ITEM_FEATURE].encode(items["item_id"]),
    }).sort("item_row")


def dataset_entry(dataset: Dataset) -> dict:
    """The manifest's ``dataset`` object: what the shards were prepared from."""
    return {"fingerprint": dataset.fingerprint, "name": dataset.spec.name,
            "labels": dataset.labels, "primary_label": dataset.primary_label,
            "spec": spec_to_toml(dataset.spec), "dir": str(dataset.root)}


def staging_dir(out: Path) -> Path:
    """Where a writer builds ``out`` before renaming it into place (same file system), after
    checking that ``out`` is absent or an empty directory."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(Problem(str(out), "already exists and is not an empty directory; "
                                "choose another output directory"))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def publish(tmp: Path, out: Path) -> None:
    """Moves a finished staging directory to ``out``: a killed write leaves no half output
    under ``out``."""
    if out.is_dir():
        out.rmdir()  # empty (checked by staging_dir)
    tmp.rename(out)


def write_shards(prepared: Prepared, out: str | Path, buckets: int = DEFAULT_BUCKETS,
                 written_by: str = "polars", progress: Callable[[str], None] | None = None) -> ShardManifest:
    """Writes ``prepared`` as prepared shards into ``out`` (absent or an empty directory).

    Per split (train, valid, test; ``tail`` rows are not written) and user bucket
    ``user_key % buckets``: one file, rows in ``row_id`` order, an empty file for an empty
    bucket; then ``items.parquet`` and ``manifest.json``. Returns the manifest as read back.
    """
    if buckets < 1:
        raise ValueError(f"buckets must be >= 1, got {buckets}")
    out = Path(out)
    tmp = staging_dir(out)
    try:
        split_rows: dict[str, list[int]] = {}
        for split in SHARD_SPLITS:
            rows = split_frame_to_shard(prepared.frame.filter(pl.col("split") == split), prepared.layout)
            rows = rows.with_columns((pl.col("user_key") % buckets).alias("_bucket")).sort("row_id")
            parts = rows.partition_by("_bucket", as_dict=True, include_key=False, maintain_order=True)
            empty = rows.clear().drop("_bucket")
            (tmp / split).mkdir()
            split_rows[split] = []
            for b in range(buckets):
                part = parts.get((b,), empty)
                write_split_file(part, tmp / part_path(split, b))
                split_rows[split].append(part.height)
            if progress:
                progress(f"{split}: {rows.height:,} rows in {buckets} files")
        write_split_file(items_frame(prepared), tmp / ITEMS_FILE)
        manifest = manifest_dict(buckets, prepared.config, prepared.layout, prepared.vocabs,
                                 dataset_entry(prepared.dataset), split_rows, written_by)
        (tmp / MANIFEST_FILE).write_text(manifest_json(manifest), encoding="utf-8")
        publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return read_manifest(out)


def read_split(manifest: ShardManifest, split: str, columns: list[str] | None = None) -> pl.DataFrame:
    """All rows of ``split`` in split order (files in bucket order, rows in file order); only
    ``columns`` when given."""
    frames = [_read_part(f.path, manifest, columns) for f in manifest.splits[split]]
    return pl.concat(frames, how="vertical") if frames else pl.DataFrame()


def _read_schema(path: Path) -> dict[str, pl.DataType]:
    try:
        return pl.read_parquet_schema(path)
    except Exception as exc:  # polars raises many exception types for broken files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(Problem(str(path), f"cannot read shard file: {first}")) from None


def _read_part(path: Path, manifest: ShardManifest, columns: list[str] | None = None) -> pl.DataFrame:
    try:
        return pl.read_parquet(path, columns=columns)
    except Exception as exc:  # polars raises many exception types for broken files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(Problem(str(path), f"cannot read shard file: {first}")) from None


def load_prepared(directory: str | Path | ShardManifest, splits: tuple[str, ...] = SHARD_SPLITS,
                  columns: list[str] | None = None) -> Prepared:
    """Prepared shards read back into memory: a ``Prepared`` whose frame holds the shard
    columns plus ``split``, the rows of ``splits`` in that order, each in split order (so a
    ``BatchLoader`` on it yields what ``ShardStream`` yields without shuffle). With
    ``splits=()`` the frame is empty and the rest (layout, vocabularies, config) is all there.
    Its ``dataset`` stands in for the source: ``root`` is the shard directory, ``fingerprint``
    the source dataset's, ``items`` is ``items.parquet`` (no text or images: content features
    need the source dataset directory), ``interactions`` the frame. ``columns``: only these
    shard columns (in file order), e.g. the keys and labels that predictions need.
    """
    manifest = directory if isinstance(directory, ShardManifest) else read_manifest(directory)
    ids = _read_schema(manifest.splits[SHARD_SPLITS[0]][0].path)
    expected = shard_columns(manifest.layout, ids["user_id"], ids["item_id"])
    if columns is not None:
        expected = {c: t for c, t in expected.items() if c in columns}
    names = None if columns is None else list(expected)
    frames = [read_split(manifest, s, names).with_columns(pl.lit(s).alias("split")) for s in splits]
    for split, frame in zip(splits, frames, strict=True):
        if frame.schema != pl.Schema({**expected, "split": pl.String}):
            raise DataError(Problem(str(manifest.root / split), f"shard columns {frame.schema} "
                                    f"differ from the schema's {expected}"))
    frame = (pl.concat(frames, how="vertical") if frames
             else pl.DataFrame(schema={**expected, "split": pl.String}))
    items = _read_part(manifest.items_path, manifest)
    spec = parse_spec(manifest.dataset["spec"])
    dataset = Dataset(root=manifest.root, spec=spec, interactions=frame, items=items, users=None,
                      fingerprint=manifest.dataset["fingerprint"], missing_media=[])
    return Prepared(dataset=dataset, frame=frame, vocabs=manifest.vocabs, layout=manifest.layout,
                    config=manifest.prepare)
