"""Column-level checks of the dataset contract (docs/design.md §4.2).

Each check appends Problems naming the file, column and first offending row; the loader raises
them together so a user sees everything wrong in one run.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from data.errors import Problem
from data.tables import first_row

_ID_TYPES = (pl.String, pl.Categorical)


def is_integer(dtype: pl.DataType) -> bool:
    return dtype.is_integer()


def check_id(df: pl.DataFrame, path: Path, col: str) -> list[Problem]:
    """An id column: integer or string, no nulls."""
    dtype = df.schema[col]
    if not (is_integer(dtype) or isinstance(dtype, _ID_TYPES)):
        return [Problem(str(path), f"id column must be integer or string, found {dtype}", column=col)]
    row = first_row(df, pl.col(col).is_null())
    if row is not None:
        return [Problem(str(path), "null id", column=col, row=row)]
    return []


def check_label(df: pl.DataFrame, path: Path, col: str) -> list[Problem]:
    """A label column: binary 0/1 (or boolean), no nulls."""
    dtype = df.schema[col]
    if dtype == pl.Boolean:
        row = first_row(df, pl.col(col).is_null())
        return [] if row is None else [Problem(str(path), "label is null; labels must be 0 or 1", col, row)]
    if not dtype.is_numeric():
        return [Problem(str(path), f"label must be numeric 0/1, found {dtype}", column=col)]
    bad = pl.col(col).is_null() | ~pl.col(col).cast(pl.Float64).is_in([0.0, 1.0])
    row = first_row(df, bad)
    if row is not None:
        value = df[col][row - 1]
        return [Problem(str(path), f"label must be 0 or 1, found {value}", column=col, row=row)]
    return []


def timestamp_seconds(df: pl.DataFrame, path: Path, col: str,
                      text_kind: str | None = None) -> tuple[pl.Series | None, list[Problem]]:
    """Converts a timestamp column to Int64 seconds since the epoch.

    Accepts integer seconds (also as text, as a CSV column with one stray word reads), whole
    float seconds, a datetime/date column, or ISO-8601 strings. ``text_kind``: what a text
    column reads as (``text_timestamp_kind`` of its first value; None: this column's first
    value decides), so that the chunks of one column are read alike.
    """
    s = df[col]
    dtype = s.dtype
    if s.null_count():
        return None, [Problem(str(path), "null timestamp", column=col, row=first_row(df, pl.col(col).is_null()))]
    if is_integer(dtype):
        seconds = s.cast(pl.Int64, strict=False)  # a UInt64 beyond Int64 becomes null
        row = first_row(pl.DataFrame({"s": seconds}), pl.col("s").is_null())
        if row is not None:
            return None, [Problem(str(path), f"timestamp {s[row - 1]} is out of range", column=col, row=row)]
        return seconds, []
    if dtype.is_float():
        bad = ~pl.col(col).is_finite() | (pl.col(col) != pl.col(col).floor()) | (pl.col(col).abs() >= 2.0**62)
        row = first_row(df, bad)
        if row is not None:
            return None, [Problem(str(path), f"timestamp must be whole seconds, found {s[row - 1]}",
                                  column=col, row=row)]
        return s.cast(pl.Int64), []
    if isinstance(dtype, pl.Datetime):
        return s.dt.epoch("s").cast(pl.Int64), []
    if dtype == pl.Date:
        return s.cast(pl.Datetime("ms")).dt.epoch("s").cast(pl.Int64), []
    if dtype == pl.String:
        return _text_timestamps(s, path, col, text_kind or text_timestamp_kind(s))
    return None, [Problem(str(path), f"timestamp must be integer seconds, datetime or ISO-8601 string, found {dtype}",
                          column=col)]


INTEGER_TEXT = "integer seconds"
ISO_TEXT = "ISO-8601"


def text_timestamp_kind(s: pl.Series) -> str:
    """What a text timestamp column reads as: integer seconds when its first value is one,
    else ISO-8601."""
    return INTEGER_TEXT if s[:1].str.strip_chars().cast(pl.Int64, strict=False)[0] is not None else ISO_TEXT


def _text_timestamps(s: pl.Series, path: Path, col: str, kind: str) -> tuple[pl.Series | None, list[Problem]]:
    """Text timestamps read as ``kind``; the first value that is not of that kind is reported
    with its row."""
    if kind == INTEGER_TEXT:
        seconds = s.str.strip_chars().cast(pl.Int64, strict=False)
    else:
        try:
            # polars infers one format from the values; it raises when it finds none.
            seconds = s.str.to_datetime(strict=False, time_zone=None).dt.epoch("s").cast(pl.Int64)
        except pl.exceptions.PolarsError:
            seconds = pl.Series([None] * len(s), dtype=pl.Int64)
    if seconds.null_count():
        row = int(seconds.is_null().arg_true()[0]) + 1
        return None, [Problem(str(path), f"unparsable timestamp '{s[row - 1]}' (the column reads as "
                              f"{kind}; use integer seconds or ISO-8601 throughout)", column=col, row=row)]
    return seconds, []


def check_unique(df: pl.DataFrame, path: Path, col: str) -> list[Problem]:
    row = first_row(df, pl.col(col).is_duplicated())
    if row is None:
        return []
    value = df[col][row - 1]
    dup_rows = df.with_row_index("_r").filter(pl.col(col) == value)["_r"].head(2).to_list()
    return [Problem(str(path), f"duplicate id '{value}' (rows {dup_rows[0] + 1} and {dup_rows[1] + 1})",
                    column=col, row=dup_rows[1] + 1)]


def check_text(df: pl.DataFrame, path: Path, col: str) -> list[Problem]:
    dtype = df.schema[col]
    if dtype not in (pl.String, pl.Null) and not dtype.is_numeric():
        return [Problem(str(path), f"text column must be string, found {dtype}", column=col)]
    return []
