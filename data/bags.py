"""Categorical columns in canonical form: single values and multi-valued bags (docs/design.md §4.3).

A single-valued categorical becomes a String column; a null is a value of its own (``<null>``),
since a missing year is information. A multi-valued one (a polars ``List`` column, or a string
column with a separator declared in ``dataset.toml``) becomes a ``List(String)`` column, the
bag: a null or empty cell is an empty bag, empty pieces of a split string (``"a||b"``, a
trailing separator) are dropped, and repeated values are kept (they weigh the value twice in a
sum or mean). Elements are strings so one vocabulary code path serves ints and strings.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from data.errors import Problem
from data.tables import first_row

NULL_VALUE = "<null>"
BAG_DTYPE = pl.List(pl.String)


def is_bag(dtype: pl.DataType) -> bool:
    """Whether a canonical column of this dtype is a multi-valued bag."""
    return isinstance(dtype, pl.List)


def check_categorical(df: pl.DataFrame, path: Path, column: str, separator: str | None) -> list[Problem]:
    """A categorical column: any scalar type; a list of strings or integers without nulls
    inside; a string column when a separator is declared."""
    dtype = df.schema[column]
    if separator is not None:
        if dtype not in (pl.String, pl.Null):
            return [Problem(str(path), f"multi-valued column with separator {separator!r} must be a "
                            f"string column, found {dtype}", column=column)]
        return []
    if isinstance(dtype, pl.Array):
        return [Problem(str(path), f"fixed-size arrays are not supported, found {dtype}; use a "
                        "List column", column=column)]
    if not isinstance(dtype, pl.List):
        if isinstance(dtype, pl.Struct | pl.Object):
            return [Problem(str(path), f"categorical column must hold scalars or lists, found {dtype}",
                            column=column)]
        return []
    inner = dtype.inner
    if not (inner.is_integer() or inner in (pl.String, pl.Categorical, pl.Null)):
        return [Problem(str(path), f"a multi-valued column must hold lists of strings or integers, "
                        f"found {dtype}", column=column)]
    row = first_row(df, pl.col(column).list.eval(pl.element().is_null().any()).list.first().fill_null(False))
    if row is not None:
        return [Problem(str(path), f"null inside a list (value {df[column][row - 1].to_list()}); "
                        "an empty bag is an empty list, not a null element", column=column, row=row)]
    return []


def categorical_exprs(df: pl.DataFrame, columns: list[str], separators: dict[str, str],
                      prefix: str) -> list[pl.Expr]:
    """Canonical ``<prefix><c>`` expressions: String for single values, ``List(String)`` bags."""
    exprs = []
    empty_bag = pl.lit([], dtype=BAG_DTYPE)
    for c in columns:
        if c in separators:
            pieces = pl.col(c).cast(pl.String).str.split(separators[c])
            bag = pieces.list.eval(pl.element().str.strip_chars().filter(pl.element().str.len_chars() > 0))
            exprs.append(bag.fill_null(empty_bag).alias(f"{prefix}{c}"))
        elif isinstance(df.schema[c], pl.List):
            bag = pl.col(c).list.eval(pl.element().cast(pl.String))
            exprs.append(bag.cast(BAG_DTYPE).fill_null(empty_bag).alias(f"{prefix}{c}"))
        else:
            exprs.append(pl.col(c).cast(pl.String).fill_null(NULL_VALUE).alias(f"{prefix}{c}"))
    return exprs
