"""Batch scoring (``recsys predict``): a Parquet or CSV file of requests, streamed in chunks.

Each chunk is validated and scored by the served model; the scores go to a temporary file next
to ``--out`` that is renamed into place only when every row was scored, so a bad request (one
error naming the column and the input's row) or an interruption leaves no half-written output.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from data.errors import DataError, Problem
from recsys.errors import UsageError
from recsys.serving.schema import ITEM_ID, USER_ID
from recsys.serving.served import ServedModel

FORMATS = (".parquet", ".csv")


def file_format(path: Path, flag: str) -> str:
    """``.parquet`` or ``.csv`` from the file name; anything else is a usage error."""
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise UsageError(f"{flag} {path}: name a .parquet or .csv file")
    return suffix


def read_chunks(path: Path, rows: int) -> tuple[Iterator[pl.DataFrame], int | None]:
    """(chunks of at most ``rows`` request rows, the file's row count when known)."""
    fmt = file_format(path, "--input")
    if not path.is_file():
        raise UsageError(f"--input {path}: no such file")
    try:
        if fmt == ".parquet":
            reader = pq.ParquetFile(path)
            batches = reader.iter_batches(batch_size=rows)
            total = reader.metadata.num_rows
        else:
            # Block size ~ rows of typical width; pyarrow infers types on the first block.
            batches = pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=1 << 22))
            total = None
    except (pa.ArrowInvalid, OSError) as err:
        raise DataError(Problem(str(path), f"unreadable ({err})")) from None

    def chunks() -> Iterator[pl.DataFrame]:
        buffered: list[pl.DataFrame] = []
        size = 0
        try:
            for batch in batches:
                frame = pl.from_arrow(pa.Table.from_batches([batch]))
                buffered.append(frame)
                size += frame.height
                while size >= rows:
                    whole = pl.concat(buffered, how="vertical_relaxed")
                    yield whole.head(rows)
                    buffered, size = [whole.slice(rows)], whole.height - rows
        except pa.ArrowInvalid as err:  # e.g. a CSV value that does not fit the inferred type
            raise DataError(Problem(str(path), f"unreadable ({err})")) from None
        if size:
            yield pl.concat(buffered, how="vertical_relaxed")

    return chunks(), total


def predict_file(served: ServedModel, input_path: str | Path, out_path: str | Path,
                 chunk_rows: int = 65536, keep: tuple[str, ...] = (),
                 progress: bool = True) -> dict[str, float]:
    """Scores every request row of ``input_path`` into ``out_path`` (Parquet or CSV).

    The output has the rows' ``user_id`` and ``item_id``, the ``keep`` columns (copied from
    the input, e.g. a request id) and one ``pred_<head>`` column per head, in input order.

    Returns:
        ``rows``, ``seconds`` and ``rows_per_s`` (reading and writing included).

    Raises:
        DataError: a bad request (column and row of the input) or an unreadable input.
        UsageError: bad arguments.
    """
    input_path, out_path = Path(input_path), Path(out_path)
    out_fmt = file_format(out_path, "--out")
    if chunk_rows < 1:
        raise UsageError(f"--chunk-rows must be >= 1, got {chunk_rows}")
    if out_path.resolve() == input_path.resolve():
        raise UsageError("--out must not be the --input file")
    chunks, total = read_chunks(input_path, chunk_rows)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp-{os.getpid()}")
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="predict", unit="row", unit_scale=True)
    writer: pq.ParquetWriter | pacsv.CSVWriter | None = None
    done = 0
    start = time.perf_counter()
    try:
        for chunk in chunks:
            missing = [c for c in keep if c not in chunk.columns]
            if missing:
                raise UsageError(f"--keep {missing[0]}: the input has no such column")
            scores = served.predict(chunk, source=str(input_path), row_offset=done)
            kept = [c for c in (USER_ID, ITEM_ID, *keep) if c in chunk.columns]
            table = pl.concat([chunk.select(kept), scores], how="horizontal").to_arrow()
            if writer is None:
                writer = (pq.ParquetWriter(tmp, table.schema) if out_fmt == ".parquet"
                          else pacsv.CSVWriter(tmp, table.schema))
            writer.write_table(table.cast(writer.schema) if out_fmt == ".parquet" else table)
            done += chunk.height
            if bar is not None:
                bar.update(chunk.height)
        if writer is None:  # an empty input: an empty output with the score columns
            empty = served.predict(pl.DataFrame()).to_arrow()
            writer = (pq.ParquetWriter(tmp, empty.schema) if out_fmt == ".parquet"
                      else pacsv.CSVWriter(tmp, empty.schema))
            writer.write_table(empty)
        writer.close()
        writer = None
        tmp.replace(out_path)
    finally:
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
    seconds = time.perf_counter() - start
    return {"rows": done, "seconds": seconds, "rows_per_s": done / max(seconds, 1e-9)}
