"""Checking request rows against a served model's schema (``recsys.serving.schema``).

Every problem names where the requests came from, the column and the first offending row
(1-based, counted from the first row of the whole input, so a chunk of a file reports the file's
row), as the dataset loader does (``data.errors.Problem``); ``recsys predict`` turns them into
exit status 2, the pyfunc model into an MLflow "bad request". A valid request frame comes back in
canonical form: ids of the run's kinds, ``ts`` in Int64 seconds, ``ctx_<c>`` / ``user_<c>``
categoricals as the dataset loader writes them, ``history`` as a list of item ids (or null).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl

from data.bags import categorical_exprs, check_categorical
from data.errors import DataError, Problem
from data.tables import first_row
from data.validate import timestamp_seconds
from recsys.serving.schema import (
    COUNTS,
    HISTORY,
    ITEM_ID,
    PRIOR_FIELDS,
    TIMESTAMP,
    USER_ID,
    RequestSchema,
)

TS = "ts"  # the canonical timestamp column (Int64 seconds), as in the dataset's interactions


def to_polars(requests: pd.DataFrame | pl.DataFrame, source: str) -> pl.DataFrame:
    """``requests`` as a polars frame; a pandas column polars cannot hold is named."""
    if isinstance(requests, pl.DataFrame):
        return requests
    if not isinstance(requests, pd.DataFrame):
        raise DataError(Problem(source, f"requests must be a table of rows, got a "
                                f"{type(requests).__name__}"))
    try:
        return pl.from_pandas(requests)
    except Exception:  # noqa: BLE001 - find the column and the row, then report them
        for col in requests.columns:
            try:
                pl.from_pandas(requests[[col]])
            except Exception as err:  # noqa: BLE001 - pyarrow raises many types
                raise DataError(_mixed(requests[col].tolist(), str(col), source, err)) from None
        raise


def _kind(value: object) -> str | None:
    """What a request value is, for a mixed-type message (None for a missing value)."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, bool | int | float | np.number):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple | np.ndarray):
        return "list"
    return "object" if isinstance(value, dict) else type(value).__name__


def _mixed(values: list, column: str, source: str, err: Exception) -> Problem:
    """The first value of another kind than the column's first one."""
    kinds = [_kind(v) for v in values]
    first = next((k for k in kinds if k is not None), None)
    for row, kind in enumerate(kinds, start=1):
        if kind is not None and kind != first:
            return Problem(source, f"value {values[row - 1]!r} is a {kind}, the rows before "
                           f"hold {first}s", column, row)
    return Problem(source, f"values of an unsupported type ({type(err).__name__})", column)


def validate_requests(df: pl.DataFrame, schema: RequestSchema, source: str = "request",
                      row_offset: int = 0) -> pl.DataFrame:
    """The canonical form of request rows ``df``.

    Args:
        df: request rows (columns as in ``RequestSchema``; others are ignored).
        schema: the served model's request schema.
        source: what the rows are called in a problem (a file name, or ``request``).
        row_offset: rows of the input before ``df`` (a chunk of a larger file).

    Returns:
        ``user_id``, ``item_id``, ``ts``, ``ctx_<c>``, ``history`` (List of item ids, at most
        L, or null), the count columns (Int64, null where absent) and ``user_<c>`` (null where
        the request does not send it).

    Raises:
        DataError: one problem per bad column, each naming its first bad row.
    """
    missing = [c for c in schema.required if c not in df.columns]
    if missing:
        raise DataError([Problem(source, "missing column: a request needs "
                                 f"{', '.join(schema.required)}", column=c) for c in missing])
    problems: list[Problem] = []
    out: list[pl.Series] = []
    for col, integer in ((USER_ID, schema.user_ids_integer), (ITEM_ID, schema.item_ids_integer)):
        ids, found = _ids(df, col, integer, source)
        problems += found
        out.append(ids)
    seconds, found = timestamp_seconds(df, Path(source), TIMESTAMP)
    problems += found
    out.append((seconds if seconds is not None else pl.Series(dtype=pl.Int64)).alias(TS))
    canonical = _categoricals(df, schema.context, schema, source, "ctx_", problems, keep_null=False)
    canonical += _categoricals(df, tuple(c for c in schema.user_features if c in df.columns),
                               schema, source, "user_", problems, keep_null=True)
    history, found = _history(df, schema, source)
    problems += found
    counts, found = _counts(df, source)
    problems += found
    if problems:
        raise DataError([_shifted(p, row_offset) for p in problems])
    frame = pl.DataFrame(out).with_columns(history)
    if canonical:
        frame = frame.with_columns(df.select(canonical))
    return frame.with_columns(counts)


def _shifted(problem: Problem, offset: int) -> Problem:
    if problem.row is None or not offset:
        return problem
    return Problem(problem.file, problem.message, problem.column, problem.row + offset)


def _ids(df: pl.DataFrame, col: str, integer: bool, source: str) -> tuple[pl.Series, list[Problem]]:
    """An id column in the run's id kind (Int64 or String)."""
    s = df[col]
    kind = "integers" if integer else "strings"
    target = pl.Int64 if integer else pl.String
    if not (s.dtype.is_numeric() or s.dtype in (pl.String, pl.Categorical, pl.Null)):
        return s, [Problem(source, f"ids must be integers or strings, found {s.dtype}", col)]
    row = first_row(df, pl.col(col).is_null())
    if row is not None:
        return s, [Problem(source, "null id", col, row)]
    if s.dtype.is_float():  # a pandas integer column that held a null at some point
        row = first_row(df, pl.col(col) != pl.col(col).floor())
        if row is not None:
            return s, [Problem(source, f"id {s[row - 1]} is not a whole number", col, row)]
        s = s.cast(pl.Int64)
    cast = s.cast(target, strict=False)
    row = first_row(pl.DataFrame({"v": cast}), pl.col("v").is_null())
    if row is not None:
        return s, [Problem(source, f"id '{s[row - 1]}' is not of this model's kind (its ids are "
                           f"{kind})", col, row)]
    return cast.alias(col), []


def _categoricals(df: pl.DataFrame, columns: tuple[str, ...], schema: RequestSchema, source: str,
                  prefix: str, problems: list[Problem], keep_null: bool) -> list[pl.Expr]:
    """Canonical ``<prefix><c>`` expressions of ``columns`` (data.bags); with ``keep_null`` a
    null stays null (the snapshot's value is used there) instead of becoming a value."""
    exprs = []
    for c in columns:
        # A multi-valued column declared with a separator may also come as a list.
        sep = None if isinstance(df.schema[c], pl.List) else schema.separators.get(c)
        found = check_categorical(df, Path(source), c, sep)
        if found:
            problems += found
            continue
        (expr,) = categorical_exprs(df, [c], {c: sep} if sep else {}, prefix)
        if keep_null:
            expr = pl.when(pl.col(c).is_null()).then(None).otherwise(expr).alias(f"{prefix}{c}")
        exprs.append(expr)
    return exprs


def _history(df: pl.DataFrame, schema: RequestSchema, source: str) -> tuple[pl.Series, list[Problem]]:
    """``history`` as List(item id kind), at most L items (the most recent first), or null."""
    item_type = pl.Int64 if schema.item_ids_integer else pl.String
    list_type = pl.List(item_type)
    if HISTORY not in df.columns:
        return pl.Series(HISTORY, [None] * df.height, dtype=list_type), []
    s = df[HISTORY]
    if s.dtype == pl.Null:
        return pl.Series(HISTORY, [None] * df.height, dtype=list_type), []
    if s.dtype == pl.String:  # CSV: ids separated by spaces
        s = s.str.extract_all(r"\S+")
    if not isinstance(s.dtype, pl.List):
        return s, [Problem(source, f"history must be a list of item ids (in CSV: ids separated "
                           f"by spaces), found {df.schema[HISTORY]}", HISTORY)]
    frame = pl.DataFrame({"h": s})
    row = first_row(frame, pl.col("h").list.eval(pl.element().is_null().any()).list.first()
                    .fill_null(False))
    if row is not None:
        return s, [Problem(source, "null inside a history list", HISTORY, row)]
    inner = s.dtype.inner
    if inner.is_float():
        row = first_row(frame, pl.col("h").list.eval((pl.element() != pl.element().floor()).any())
                        .list.first().fill_null(False))
        if row is not None:
            return s, [Problem(source, "history item ids must be whole numbers", HISTORY, row)]
        s = s.cast(pl.List(pl.Int64))
    if not (inner.is_numeric() or inner in (pl.String, pl.Categorical, pl.Null)):
        return s, [Problem(source, f"history must hold item ids, found {s.dtype}", HISTORY)]
    cast = s.list.eval(pl.element().cast(item_type, strict=False))
    lost = pl.DataFrame({"c": cast.list.eval(pl.element().null_count()).list.first().fill_null(0)})
    row = first_row(lost, pl.col("c") > 0)
    if row is not None:
        return s, [Problem(source, f"history {s[row - 1].to_list()} holds an id that is not of "
                           f"this model's kind (its item ids are "
                           f"{'integers' if schema.item_ids_integer else 'strings'})",
                           HISTORY, row)]
    return cast.list.head(schema.max_history).cast(list_type).alias(HISTORY), []


def _counts(df: pl.DataFrame, source: str) -> tuple[list[pl.Series], list[Problem]]:
    """The prior-rate counts of ``user_prior`` / ``item_prior`` as Int64 columns (null where
    a row leaves them to the snapshot). A count object comes as a struct column, or from a
    CSV as two columns ``<name>.rows`` and ``<name>.positives``."""
    problems: list[Problem] = []
    out: list[pl.Series] = []
    for name, names in COUNTS.items():
        fields, found = _count_fields(df, name, source)
        problems += found
        if found:
            out += [pl.Series(n, [None] * df.height, dtype=pl.Int64) for n in names]
            continue
        where = {f: (name if isinstance(df.schema.get(name), pl.Struct) else f"{name}.{f}")
                 for f in PRIOR_FIELDS}
        before = len(problems)
        pair = []
        for f, n in zip(PRIOR_FIELDS, names, strict=True):
            v = fields[f].cast(pl.Float64)
            frame = pl.DataFrame({"v": v})
            row = first_row(frame, pl.col("v").is_not_null() & (
                ~pl.col("v").is_finite() | (pl.col("v") != pl.col("v").floor()) | (pl.col("v") < 0)))
            if row is not None:
                problems.append(Problem(source, f"{f} must be a whole number >= 0, found "
                                        f"{fields[f][row - 1]}", where[f], row))
            pair.append(v.cast(pl.Int64, strict=False).alias(n))
        if len(problems) > before:  # a bad count: the checks of the pair would repeat it
            out += pair
            continue
        rows, positives = pair
        both = pl.DataFrame({"r": rows, "p": positives})
        row = first_row(both, pl.col("r").is_null() != pl.col("p").is_null())
        if row is not None:
            problems.append(Problem(source, "give both rows and positives, or neither (null: "
                                    "the model's snapshot is used)", where["positives"], row))
        row = first_row(both, pl.col("p") > pl.col("r"))
        if row is not None:
            problems.append(Problem(source, f"positives ({positives[row - 1]}) exceed rows "
                                    f"({rows[row - 1]})", where["positives"], row))
        out += pair
    return out, problems


def _count_fields(df: pl.DataFrame, name: str, source: str
                  ) -> tuple[dict[str, pl.Series], list[Problem]]:
    """The ``rows`` and ``positives`` values of count object ``name`` (nulls where absent)."""
    absent = pl.Series([None] * df.height, dtype=pl.Float64)
    dtype = df.schema.get(name)
    if dtype is None or dtype == pl.Null:
        flat = {f: df[f"{name}.{f}"] if f"{name}.{f}" in df.columns else absent
                for f in PRIOR_FIELDS}
        bad = [f"{name}.{f}" for f, s in flat.items() if not (s.dtype.is_numeric() or s.dtype == pl.Null)]
        if bad:
            return {}, [Problem(source, "a count must be a number", c) for c in bad]
        return flat, []
    if not isinstance(dtype, pl.Struct):
        return {}, [Problem(source, f"must be an object {{\"rows\": n, \"positives\": k}} (in CSV: "
                            f"columns {name}.rows and {name}.positives), found {dtype}", name)]
    names = {f.name for f in dtype.fields}
    unknown = sorted(names - set(PRIOR_FIELDS))
    if unknown:
        return {}, [Problem(source, f"unknown field(s) {unknown}; the fields are "
                            f"{list(PRIOR_FIELDS)}", name)]
    s = df[name]
    fields = {f: s.struct.field(f) if f in names else absent for f in PRIOR_FIELDS}
    bad = [f for f, v in fields.items() if not (v.dtype.is_numeric() or v.dtype == pl.Null)]
    if bad:
        return {}, [Problem(source, f"{bad[0]} must be a number, found {fields[bad[0]].dtype}", name)]
    return fields, []  # a null object has null fields: both are left to the snapshot
