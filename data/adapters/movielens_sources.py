"""Reading and validating the MovieLens source CSVs (the adapter's input side).

Files are read as text and parsed here, so that a malformed value is reported with its file,
column and row instead of surfacing as a polars schema error.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from data.errors import DataError, Problem, ProblemList
from data.tables import first_row
from data.validate import check_unique

RATING_MIN, RATING_MAX = 0.5, 5.0

_REQUIRED_COLUMNS = {
    "ratings.csv": ["userId", "movieId", "rating", "timestamp"],
    "movies.csv": ["movieId", "title", "genres"],
    # Only what the adapter uses: the tagger and the tag time carry no item information.
    "tags.csv": ["movieId", "tag"],
    "links.csv": ["movieId", "imdbId", "tmdbId"],
}




def _read_optional(path: Path) -> pl.DataFrame | None:
    """An optional file (tags, links): None when absent; a header-only file is fine."""
    return _read_csv(path, allow_empty=True) if path.is_file() else None


def _read_csv(path: Path, allow_empty: bool = False) -> pl.DataFrame:
    """Reads a MovieLens CSV with every column as text."""
    if not path.is_file():
        raise DataError(Problem(str(path), f"missing file: a MovieLens folder needs {path.name}"))
    try:
        # All text: a stray "abc" in a numeric column must become a row-level message below,
        # not a schema inference error (or, worse, a whole column silently read as strings).
        df = pl.read_csv(path, infer_schema=False)
    except Exception as exc:  # polars raises several exception types for broken CSV files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(Problem(str(path), f"cannot read CSV: {first}")) from None
    missing = [c for c in _REQUIRED_COLUMNS[path.name] if c not in df.columns]
    if missing:
        raise DataError([Problem(str(path), f"missing column (file has: {', '.join(df.columns)})",
                                 column=c) for c in missing])
    if df.height == 0 and not allow_empty:
        raise DataError(Problem(str(path), "no data rows"))
    return df


def _check_ints(df: pl.DataFrame, path: Path, col: str, problems: ProblemList, what: str,
                hint: str = "") -> bool:
    """Integer column without nulls; records the first null or unparsable value."""
    raw = pl.col(col).str.strip_chars()
    row = first_row(df, raw.is_null() | (raw == ""))
    if row is not None:
        problems.add(str(path), f"null {what}", col, row)
        return False
    row = first_row(df, raw.cast(pl.Int64, strict=False).is_null())
    if row is not None:
        problems.add(str(path), f"unparsable {what} '{df[col][row - 1]}'{hint}", col, row)
        return False
    return True


def _check_ratings(df: pl.DataFrame, path: Path, problems: ProblemList) -> None:
    raw = pl.col("rating").str.strip_chars()
    value = raw.cast(pl.Float64, strict=False)
    row = first_row(df, raw.is_null() | (raw == ""))
    if row is not None:
        problems.add(str(path), "null rating", "rating", row)
        return
    row = first_row(df, value.is_null())
    if row is not None:
        problems.add(str(path), f"rating is not a number: '{df['rating'][row - 1]}'", "rating", row)
        return
    # is_between is False for NaN, so "nan" is reported here too.
    row = first_row(df, ~value.is_between(RATING_MIN, RATING_MAX))
    if row is not None:
        problems.add(str(path), f"rating {df['rating'][row - 1]} is outside "
                     f"[{RATING_MIN:g}, {RATING_MAX:g}]", "rating", row)


def _as_int(*columns: str) -> list[pl.Expr]:
    return [pl.col(c).str.strip_chars().cast(pl.Int64) for c in columns]


def _read_sources(src: Path) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame | None,
                                       pl.DataFrame | None]:
    """Reads and validates the four files; ids and timestamps come back as Int64, rating Float64.

    Every column-level problem across the files is raised together, so one run shows them all.
    """
    ratings_path, movies_path = src / "ratings.csv", src / "movies.csv"
    tags_path, links_path = src / "tags.csv", src / "links.csv"
    movies = _read_csv(movies_path)
    ratings = _read_csv(ratings_path)
    tags = _read_optional(tags_path)
    links = _read_optional(links_path)

    problems = ProblemList()
    movie_ids_ok = _check_ints(movies, movies_path, "movieId", problems, "id")
    rating_ids_ok = all([
        _check_ints(ratings, ratings_path, "userId", problems, "id"),
        _check_ints(ratings, ratings_path, "movieId", problems, "id"),
    ])
    _check_ratings(ratings, ratings_path, problems)
    _check_ints(ratings, ratings_path, "timestamp", problems, "timestamp",
                " (MovieLens timestamps are integer seconds since the epoch)")
    if tags is not None:
        _check_ints(tags, tags_path, "movieId", problems, "id")
    if links is not None and _check_ints(links, links_path, "movieId", problems, "id"):
        links = links.with_columns(_as_int("movieId"))
        problems.problems += check_unique(links, links_path, "movieId")
    if movie_ids_ok:
        movies = movies.with_columns(_as_int("movieId"))
        problems.problems += check_unique(movies, movies_path, "movieId")
    problems.raise_if_any()

    ratings = ratings.with_columns(
        *_as_int("userId", "movieId", "timestamp"),
        pl.col("rating").str.strip_chars().cast(pl.Float64),
    )
    if rating_ids_ok:
        unknown = ratings.select(pl.col("movieId")).with_row_index("row", offset=1).join(
            movies.select("movieId"), on="movieId", how="anti").sort("row").head(1)
        if unknown.height:
            raise DataError(Problem(str(ratings_path), f"movie {unknown['movieId'][0]} is not in "
                                    "movies.csv", column="movieId", row=int(unknown["row"][0])))
    if tags is not None:
        tags = tags.with_columns(_as_int("movieId"))
    return ratings, movies, tags, links


# ---------------------------------------------------------------------------------------------
# Building the tables
