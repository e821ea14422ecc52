"""The interactions table read, checked and partitioned by user a chunk at a time (the first
pass of ``data.prepare_bounded``).

Every chunk goes through the same checks and the same canonical columns as ``load_dataset``
(``data.dataset.interaction_problems`` and ``canonical_interactions``), with row numbers
counted from the table's first row, so a bad table gives the same problems as the in-memory
loader: the first offending row of every check, over the whole table, in the loader's order.
Memory: one chunk (``chunk_rows`` source rows) at a time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from data.dataset import canonical_interactions, check_item_id_types, interaction_problems
from data.errors import DataError, Problem
from data.spec import DatasetSpec
from data.tables import resolve_table_path
from data.validate import text_timestamp_kind

# Chunks of this many source rows: big enough that per-chunk overhead does not matter, small
# next to the work partitions that bound the memory of the later passes.
CHUNK_ROWS = 1 << 20
PARTITION_COLUMN = "_part"


def _read_error(path: Path, exc: Exception) -> DataError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return DataError(Problem(str(path), f"cannot read table: {first}"))


def scan_table(path: Path) -> pl.LazyFrame:
    """A lazy scan of a Parquet or CSV table read as ``data.tables.read_table`` reads it."""
    try:
        if path.suffix == ".csv":
            lf = pl.scan_csv(path, infer_schema_length=10_000)
        else:
            lf = pl.scan_parquet(path)
        lf.collect_schema()
    except Exception as exc:  # polars raises many exception types for broken files
        raise _read_error(path, exc) from None
    return lf


def table_rows(lf: pl.LazyFrame, path: Path) -> int:
    """Rows of a scanned table (Parquet: from its metadata; CSV: one streaming pass)."""
    try:
        rows = lf.select(pl.len()).collect(engine="streaming").item()
    except Exception as exc:  # polars raises many exception types for broken files
        raise _read_error(path, exc) from None
    if rows == 0:
        raise DataError(Problem(str(path), "table is empty (no data rows)"))
    return rows


def _chunks(lf: pl.LazyFrame, path: Path, chunk_rows: int) -> Iterator[pl.DataFrame]:
    try:
        yield from lf.collect_batches(chunk_size=chunk_rows, engine="streaming")
    except Exception as exc:  # a file that breaks half way through
        raise _read_error(path, exc) from None


def _shifted(problem: Problem, offset: int) -> Problem:
    return problem if problem.row is None else dataclasses.replace(problem, row=problem.row + offset)


def _keep_first(found: dict[str | None, Problem], problem: Problem) -> None:
    """Keeps the first problem of each column (one check per column), so the first chunk that
    fails a check reports it, as the whole-table check would; a null anywhere comes first, as
    the loader looks for nulls before it looks at values."""
    old = found.get(problem.column)
    if old is None or (problem.message.startswith("null") and not old.message.startswith("null")):
        found[problem.column] = problem


def partition_interactions(root: Path, spec: DatasetSpec, items: pl.DataFrame, items_path: Path,
                           out: Path, work_rows: int, chunk_rows: int = CHUNK_ROWS,
                           progress: bool = False) -> tuple[Path, pl.DataType, int]:
    """Checks the interactions table chunk by chunk and writes its canonical rows (the columns
    of ``Dataset.interactions``) into ``out/<p>/<chunk>.parquet``, ``p`` = a hash of the user
    id modulo ``partitions`` = ceil(rows / ``work_rows``): every user's rows land in one
    partition, about ``work_rows`` rows per partition when no user dominates.

    Returns the table's path, the source dtype of its user ids and the number of partitions.

    Raises:
        DataError: as ``load_dataset`` would for this table: the first offending row of each
            check over the whole table, or the first row whose item is not in the item table.
    """
    path = resolve_table_path(root, spec.interactions.file, "interactions.file")
    lf = scan_table(path)
    total = table_rows(lf, path)
    partitions = max(1, -(-total // work_rows))
    first = lf.head(1).collect()
    ts_col = spec.interactions.timestamp
    # Only a text column needs the kind; a column the checks reject gets its problem from them.
    text_kind = (text_timestamp_kind(first[ts_col]) if ts_col in first.columns
                 and first.schema[ts_col] == pl.String and first[ts_col].null_count() == 0 else None)
    found: dict[str | None, Problem] = {}
    unknown_item: DataError | None = None
    offset = 0
    bar = _progress_bar(total, "check + partition", progress)
    for index, chunk in enumerate(_chunks(lf, path, chunk_rows)):
        ts, problems = interaction_problems(chunk, path, spec, text_ts_kind=text_kind)
        for problem in problems:
            _keep_first(found, _shifted(problem, offset))
        if problems or found:
            offset += chunk.height  # keep checking: a later check may fail in a later chunk
            bar.update(chunk.height)
            continue
        check_item_id_types(spec, chunk.schema[spec.interactions.item], items, path, items_path)
        try:
            rows = canonical_interactions(chunk, ts, spec, items, path, items_path, row_offset=offset)
        except DataError as err:  # reported only when no column check fails (as the loader does)
            unknown_item = unknown_item or err
            offset += chunk.height
            bar.update(chunk.height)
            continue
        if unknown_item is None:
            _write_partitions(rows, out, partitions, index)
        offset += chunk.height
        bar.update(chunk.height)
    bar.close()
    if found:
        s = spec.interactions
        order = [s.user, s.item, *s.labels, s.timestamp, *s.categorical]  # the loader's order
        raise DataError(sorted(found.values(), key=lambda p: order.index(p.column)))
    if unknown_item is not None:
        raise unknown_item
    return path, first.schema[spec.interactions.user], partitions


def _write_partitions(rows: pl.DataFrame, out: Path, partitions: int, chunk: int) -> None:
    part = (pl.col("user_id").hash(seed=0) % partitions).alias(PARTITION_COLUMN)
    pieces = rows.with_columns(part).partition_by(PARTITION_COLUMN, as_dict=True, include_key=False,
                                                  maintain_order=True)
    for (p,), piece in pieces.items():
        (out / f"{p:05d}").mkdir(parents=True, exist_ok=True)
        # Temporary files, read once: fast compression over small files.
        piece.write_parquet(out / f"{p:05d}" / f"{chunk:06d}.parquet", compression="lz4")


def read_partition(out: Path, p: int) -> pl.DataFrame | None:
    """Partition ``p``'s canonical rows in ``row_id`` order, None when it holds no user."""
    files = sorted((out / f"{p:05d}").glob("*.parquet"))
    if not files:
        return None
    return pl.concat([pl.read_parquet(f) for f in files], how="vertical")


def _progress_bar(total: int, what: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=what, unit="row", unit_scale=True, disable=not enabled)
