"""Reading one contract table (Parquet or CSV) with clear errors."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from data.errors import DataError, Problem
from data.paths import PathRefused, resolve_inside
from data.spec import SPEC_FILE


def resolve_table_path(root: Path, name: str, key: str) -> Path:
    """Finds table ``name`` in ``root``; a Parquet name may be given as CSV with the same stem and
    back. ``key`` is the ``dataset.toml`` key that names it (``interactions.file``).

    Raises DataError when neither exists, or when the name leads outside ``root`` (symlinks
    followed; docs/threat_model.md).
    """
    spec_file = str(root / SPEC_FILE)
    try:
        path = resolve_inside(root, name)
        if path.is_file():
            return path
        for ext in (".parquet", ".csv"):
            alt = resolve_inside(root, str(Path(name).with_suffix(ext)))
            if alt.is_file():
                return alt
    except PathRefused as err:
        raise DataError(Problem(spec_file, f"table file {err}; tables must lie inside it",
                                column=key)) from None
    except ValueError:  # with_suffix of a name without a stem ("." or "dir/")
        pass
    raise DataError(Problem(str(root / name), f"missing file (named in dataset.toml, {key})"))


def read_table(path: Path) -> pl.DataFrame:
    """Reads a Parquet or CSV file; a broken file is one DataError, an empty one too."""
    try:
        if path.suffix == ".csv":
            # try_parse_dates stays off: timestamps are parsed by the validator, so that an
            # unparsable one is reported with its row instead of silently staying a string.
            df = pl.read_csv(path, infer_schema_length=10_000)
        else:
            df = pl.read_parquet(path)
    except Exception as exc:  # polars raises many exception types for broken files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(Problem(str(path), f"cannot read table: {first}")) from None
    if df.height == 0:
        raise DataError(Problem(str(path), "table is empty (no data rows)"))
    return df


def require_columns(df: pl.DataFrame, path: Path, columns: list[str]) -> list[Problem]:
    """One problem per column that the spec names but the table lacks."""
    present = set(df.columns)
    return [
        Problem(str(path), f"missing column (table has: {', '.join(df.columns)})", column=c)
        for c in dict.fromkeys(columns)
        if c not in present
    ]


def first_row(df: pl.DataFrame, mask: pl.Expr) -> int | None:
    """1-based index of the first row where ``mask`` holds, or None."""
    hit = df.select(mask.arg_true().first()).item()
    return None if hit is None else int(hit) + 1
