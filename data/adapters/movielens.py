"""MovieLens "latest" layout (plus an optional poster folder) -> contract dataset (docs/design.md §4).

Source layout (https://grouplens.org/datasets/movielens/, e.g. ``ml-latest-small``)::

    ratings.csv   userId,movieId,rating,timestamp     required
    movies.csv    movieId,title,genres                required; genres pipe-separated
    tags.csv      userId,movieId,tag,timestamp        optional
    links.csv     movieId,imdbId,tmdbId               optional
    POSTERS/<movieId>.jpg                             optional folder (.jpeg / .png accepted too)

Output: ``dataset.toml``, ``interactions.parquet``, ``items.parquet``, ``posters/`` and
``prepare_report.json``. docs/movielens.md has the column mapping. The source files are read as
text and parsed here, so that a malformed value is reported with its file, column and row
instead of surfacing as a polars schema error.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import polars as pl
from PIL import Image

from data.adapters.movielens_sources import RATING_MAX, RATING_MIN, _read_sources
from data.errors import DataError, Problem
from data.spec import SPEC_FILE, DatasetSpec, InteractionsSpec, ItemsSpec, spec_to_toml

MAX_TAGS = 20
NO_GENRES = "(no genres listed)"
GENRE_SEPARATOR = ", "  # of the genres text column, declared as its bag separator
POSTER_DIR = "posters"
REPORT_FILE = "prepare_report.json"
# Lower rank wins when a movie has posters in several formats, so the choice is deterministic.
_POSTER_RANK = {"jpg": 0, "jpeg": 1, "png": 2}

# "(1995)" at the end of a title, or a series' "(2006–2007)" / "(2006-)"; group 1 is the year.
_YEAR_SUFFIX = r"\s*\((\d{4})(?:\s*[-–]\s*(?:\d{4})?)?\)\s*$"
# MovieLens files English titles as "American President, The"; a text encoder reads the natural
# order better. An alternative title in parentheses stays after the main one.
_TRAILING_ARTICLE = r"^(.+), (The|A|An)(\s\(.+\))?$"


@dataclass(frozen=True)
class MovieLensReport:
    """What ``prepare_movielens`` wrote; also saved as ``prepare_report.json`` in the dataset."""

    out: str
    source: str
    like_threshold: float
    rows: int
    users: int
    items: int
    rated_items: int
    like_share: float
    tagged_items: int
    items_with_poster: int
    poster_share_items: float
    poster_share_ratings: float
    posters_unreadable: int
    posters_unmatched: int
    poster_transfer: str
    seconds: float

    def lines(self) -> list[str]:
        return [
            f"wrote {self.out}",
            f"  ratings {self.rows:,}  users {self.users:,}  items {self.items:,} "
            f"({self.rated_items:,} rated, {self.tagged_items:,} tagged)",
            f"  like = rating >= {self.like_threshold:g}: {self.like_share:.1%} of ratings",
            f"  posters: {self.items_with_poster:,} items ({self.poster_share_items:.1%}), "
            f"{self.poster_share_ratings:.1%} of ratings; {self.posters_unreadable} unreadable, "
            f"{self.posters_unmatched} without a movie; {self.poster_transfer}",
            f"  {self.seconds:.1f} s",
        ]


def prepare_movielens(
    src: str | Path,
    out: str | Path,
    posters: str | Path | None = None,
    like_threshold: float = 4.0,
    overwrite: bool = False,
    log: Callable[[str], None] | None = print,
) -> Path:
    """Turns a MovieLens "latest" folder into a contract dataset at ``out``; returns ``out``.

    The dataset is built in a temporary directory beside ``out`` and renamed into place, so a
    failure leaves nothing behind. Posters are hard-linked into ``out/posters/`` when source and
    output share a filesystem and copied otherwise, which keeps the dataset self-contained
    (contract image paths are relative to the dataset directory). Unreadable posters are left
    out (the movie gets no poster) with a warning and counted in the report.

    Args:
        src: folder with ratings.csv and movies.csv (tags.csv, links.csv optional).
        out: dataset directory to create.
        posters: optional folder of ``<movieId>.jpg`` images.
        like_threshold: ``like = 1`` when ``rating >= like_threshold``.
        overwrite: replace an existing dataset at ``out``.
        log: receives the report lines; None keeps quiet.

    Raises:
        DataError: a malformed source file (naming file, column and first offending row), or an
            ``out`` that may not be replaced.
    """
    started = time.perf_counter()
    src, out = Path(src), Path(out)
    if not (RATING_MIN <= like_threshold <= RATING_MAX) or math.isnan(like_threshold):
        raise ValueError(f"like_threshold must be in [{RATING_MIN}, {RATING_MAX}], "
                         f"got {like_threshold}")
    if not src.is_dir():
        raise DataError(Problem(str(src), "MovieLens folder does not exist"))
    posters = None if posters is None else Path(posters)
    if posters is not None and not posters.is_dir():
        raise DataError(Problem(str(posters), "poster folder does not exist"))
    _check_target(out, [src, *([posters] if posters else [])], overwrite)

    # Everything is read and validated before anything is written.
    ratings, movies, tags, links = _read_sources(src)
    interactions = _interactions(ratings, like_threshold)
    items = _items(movies, tags, links)
    found = _find_posters(posters, items) if posters is not None else None

    out.absolute().parent.mkdir(parents=True, exist_ok=True)
    # Beside out (same filesystem, so the final rename is atomic); mkdir rather than mkdtemp
    # because mkdtemp's 0700 mode would survive the rename and hide the dataset from others.
    tmp = out.absolute().parent / f".{out.name}.{uuid.uuid4().hex[:8]}.partial"
    tmp.mkdir()
    try:
        transfer = "none"
        unreadable = 0
        if found is not None:
            kept, unreadable, transfer = _transfer_posters(found, posters, tmp / POSTER_DIR)
            items = items.join(kept, on="item_id", how="left", maintain_order="left")
        tagged = "tags" in items.columns
        text = ["title", "genres", *(["tags"] if tagged else [])]
        spec = DatasetSpec(
            name=src.resolve().name,
            interactions=InteractionsSpec(file="interactions.parquet", user="user_id",
                                          item="item_id", timestamp="timestamp", labels=["like"]),
            # Genres and tags are also bags (multi-valued categoricals): the genre text split
            # on its separator, and the tag list as a List column; both forms of the contract.
            items=ItemsSpec(file="items.parquet", id="item_id", text=text,
                            image="poster" if found is not None else None,
                            categorical=["year", "genres", *(["tag_list"] if tagged else [])],
                            multi_valued={"genres": GENRE_SEPARATOR}),
        )
        interactions.write_parquet(tmp / spec.interactions.file)
        items.write_parquet(tmp / spec.items.file)
        (tmp / SPEC_FILE).write_text(spec_to_toml(spec), encoding="utf-8")
        report = _report(
            out, src, like_threshold, interactions, items,
            unreadable=unreadable,
            unmatched=0 if found is None else found.height - found["matched"].sum(),
            transfer=transfer, seconds=time.perf_counter() - started,
        )
        report_text = json.dumps(asdict(report), indent=2) + "\n"
        (tmp / REPORT_FILE).write_text(report_text, encoding="utf-8")
        _commit(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if log is not None:
        for line in report.lines():
            log(line)
    return out


# ---------------------------------------------------------------------------------------------
# Reading and validating the source files


def _interactions(ratings: pl.DataFrame, like_threshold: float) -> pl.DataFrame:
    # Source row order is kept; the splits sort by time themselves. The raw rating stays as an
    # extra column (not a label) so another threshold or a regression target needs no re-run.
    return ratings.select(
        pl.col("userId").alias("user_id"),
        pl.col("movieId").alias("item_id"),
        pl.col("timestamp"),
        (pl.col("rating") >= like_threshold).cast(pl.Int8).alias("like"),
        pl.col("rating"),
    )


def _items(movies: pl.DataFrame, tags: pl.DataFrame | None,
           links: pl.DataFrame | None) -> pl.DataFrame:
    """One row per movie of movies.csv, in file order."""
    raw_title = pl.col("title").str.strip_chars()
    title = raw_title.str.replace(_YEAR_SUFFIX, "").str.replace(_TRAILING_ARTICLE, "$2 $1$3")
    genres = pl.col("genres").str.strip_chars()
    items = movies.select(
        pl.col("movieId").alias("item_id"),
        pl.when(title.str.len_chars() > 0).then(title).alias("title"),
        # "(no genres listed)" is MovieLens' null; as text it would read like a genre.
        pl.when((genres != NO_GENRES) & (genres.str.len_chars() > 0))
        .then(genres.str.replace_all(r"\s*\|\s*", GENRE_SEPARATOR)).alias("genres"),
        raw_title.str.extract(_YEAR_SUFFIX, 1).cast(pl.Int32).alias("year"),
    )
    if tags is not None:
        items = items.join(_tags_text(tags), on="item_id", how="left", maintain_order="left")
    if links is not None:
        # Kept for traceability (fetching posters, joining other sources); not model features.
        items = items.join(
            links.select(pl.col("movieId").alias("item_id"),
                         pl.col("imdbId").str.strip_chars().alias("imdb_id"),
                         pl.col("tmdbId").str.strip_chars().alias("tmdb_id")),
            on="item_id", how="left", maintain_order="left",
        )
    return items


def _tags_text(tags: pl.DataFrame) -> pl.DataFrame:
    """item_id, tags (text) and tag_list (the same tags as a list): distinct lowercase tags,
    most applied first (ties alphabetical), capped."""
    tag = pl.col("tag").str.strip_chars().str.replace_all(r"\s+", " ").str.to_lowercase()
    return (
        tags.select(pl.col("movieId").alias("item_id"), tag.alias("tag"))
        .filter(pl.col("tag").str.len_chars() > 0)
        .group_by("item_id", "tag").len("n")
        .sort(["item_id", "n", "tag"], descending=[False, True, False])
        .group_by("item_id", maintain_order=True)
        .agg(pl.col("tag").head(MAX_TAGS).str.join(", ").alias("tags"),
             pl.col("tag").head(MAX_TAGS).alias("tag_list"))
    )


# ---------------------------------------------------------------------------------------------
# Posters


def _find_posters(posters: Path, items: pl.DataFrame) -> pl.DataFrame:
    """name, item_id, matched: one image per movie id found in the folder."""
    names = [e.name for e in os.scandir(posters) if e.is_file()]
    pattern = r"^0*(\d+)\.(?i)(jpg|jpeg|png)$"
    return (
        pl.DataFrame({"name": names}, schema={"name": pl.String})
        .with_columns(
            pl.col("name").str.extract(pattern, 1).cast(pl.Int64).alias("item_id"),
            pl.col("name").str.extract(pattern, 2).str.to_lowercase()
            .replace_strict(_POSTER_RANK, default=None, return_dtype=pl.Int8).alias("rank"),
        )
        .drop_nulls("item_id")
        .sort("item_id", "rank")
        .unique("item_id", keep="first", maintain_order=True)
        .with_columns(pl.col("item_id").is_in(items["item_id"].implode()).alias("matched"))
        .drop("rank")
    )


def _readable_image(path: Path) -> bool:
    # The same check load_dataset makes, so the written dataset loads without
    # --allow-missing-media.
    try:
        with Image.open(path) as im:
            im.verify()
    except Exception:  # PIL raises several types for broken or non-image files
        return False
    return True


def _transfer_posters(found: pl.DataFrame, src_dir: Path,
                      dst_dir: Path) -> tuple[pl.DataFrame, int, str]:
    """Links or copies the readable posters of known movies; returns (item_id, poster), the
    number of unreadable files and how they were transferred."""
    dst_dir.mkdir()
    can_link = True
    copied = 0
    kept_ids: list[int] = []
    kept_paths: list[str] = []
    unreadable: list[str] = []
    for name, item_id in found.filter("matched").select("name", "item_id").iter_rows():
        source = src_dir / name
        if not _readable_image(source):
            unreadable.append(name)
            continue
        # Normalised name ("007.JPG" -> "7.jpg"): the relative path is predictable from the id.
        rel = f"{POSTER_DIR}/{item_id}{Path(name).suffix.lower()}"
        if can_link:
            try:
                os.link(source, dst_dir.parent / rel)
            except OSError:  # another filesystem, or links not permitted: copy from now on
                can_link = False
        if not can_link:
            shutil.copyfile(source, dst_dir.parent / rel)
            copied += 1
        kept_ids.append(item_id)
        kept_paths.append(rel)
    if unreadable:
        warnings.warn(f"{len(unreadable)} poster(s) unreadable, those movies get no poster "
                      f"(first: {src_dir / unreadable[0]})", stacklevel=3)
    kept = pl.DataFrame({"item_id": kept_ids, "poster": kept_paths},
                        schema={"item_id": pl.Int64, "poster": pl.String})
    transfer = "none" if not kept_ids else ("copy" if copied else "hardlink")
    return kept, len(unreadable), transfer


# ---------------------------------------------------------------------------------------------
# Output directory


def _check_target(out: Path, sources: list[Path], overwrite: bool) -> None:
    """Refuses an ``out`` that holds something other than a dataset we may replace."""
    if not out.exists():
        return
    if not out.is_dir():
        raise DataError(Problem(str(out), "output exists and is not a directory"))
    if not any(out.iterdir()):
        return
    if not overwrite:
        raise DataError(Problem(str(out), "output directory is not empty; pass overwrite=True "
                                "(--overwrite) to replace it"))
    # overwrite deletes the old directory: never a folder that is not a dataset (a typo such as
    # "--out ~" must not wipe a home directory), nor one that holds the inputs.
    if not (out / SPEC_FILE).is_file():
        raise DataError(Problem(str(out), f"refusing to overwrite a non-empty directory without a "
                                f"{SPEC_FILE} (it does not look like a dataset)"))
    resolved = out.resolve()
    for source in sources:
        if resolved == source.resolve() or resolved in source.resolve().parents:
            raise DataError(Problem(str(out), "refusing to overwrite: it contains the input "
                                    f"{source}"))


def _commit(tmp: Path, out: Path) -> None:
    """Moves the finished dataset into place; an old one is removed only after the swap."""
    old = None
    if out.exists():
        if any(out.iterdir()):
            old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
            out.rename(old)
        else:
            out.rmdir()
    try:
        tmp.rename(out)
    except BaseException:
        if old is not None:
            old.rename(out)
        raise
    if old is not None:
        shutil.rmtree(old)


def _report(out: Path, src: Path, like_threshold: float, interactions: pl.DataFrame,
            items: pl.DataFrame, unreadable: int, unmatched: int, transfer: str,
            seconds: float) -> MovieLensReport:
    has_poster = (items.filter(pl.col("poster").is_not_null()) if "poster" in items.columns
                  else items.clear())
    tagged = items["tags"].is_not_null().sum() if "tags" in items.columns else 0
    stats = interactions.select(
        pl.len().alias("rows"),
        pl.col("user_id").n_unique().alias("users"),
        pl.col("item_id").n_unique().alias("rated_items"),
        pl.col("like").cast(pl.Float64).mean().alias("like_share"),
        pl.col("item_id").is_in(has_poster["item_id"].implode()).mean().alias("poster_share_ratings"),
    ).row(0, named=True)
    return MovieLensReport(
        out=str(out), source=str(src.resolve()), like_threshold=float(like_threshold),
        rows=stats["rows"], users=stats["users"], items=items.height,
        rated_items=stats["rated_items"], like_share=round(stats["like_share"], 6),
        tagged_items=int(tagged), items_with_poster=has_poster.height,
        poster_share_items=round(has_poster.height / items.height, 6),
        poster_share_ratings=round(stats["poster_share_ratings"], 6),
        posters_unreadable=unreadable, posters_unmatched=int(unmatched),
        poster_transfer=transfer, seconds=round(seconds, 3),
    )
