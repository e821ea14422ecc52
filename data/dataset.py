"""Loading a contract dataset directory into canonical polars frames (docs/design.md §4.3).

Canonical columns, whatever the source names were:

- ``interactions``: ``row_id`` (Int64, source row order), ``user_id``, ``item_id``, ``ts`` (Int64
  seconds since the epoch), one Int8 column per label, ``ctx_<name>`` per context categorical
  (String), ``item_row`` (Int64 index into ``items``).
- ``items``: ``item_row`` (Int64, 0..n-1), ``item_id``, ``text`` (String, the text columns
  joined with " | "; null when all are empty), ``image`` (String absolute path; null = missing),
  ``item_<name>`` per item categorical (String, or ``List(String)`` for a multi-valued one).
- ``users`` (optional): ``user_id``, ``user_<name>`` per user categorical (String or
  ``List(String)``).

Context categoricals (``ctx_<name>``) follow the same rule (``data.bags``).

Everything downstream (derived data, batches, the content cache) uses these names only.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from PIL import Image

from data.bags import categorical_exprs, check_categorical
from data.errors import DataError, Problem
from data.paths import PathRefused, resolve_inside
from data.spec import DatasetSpec, read_spec
from data.tables import first_row, read_table, require_columns, resolve_table_path
from data.validate import check_id, check_label, check_text, check_unique, timestamp_seconds

TEXT_SEPARATOR = " | "


@dataclass
class Dataset:
    """A validated dataset in canonical form."""

    root: Path
    spec: DatasetSpec
    interactions: pl.DataFrame
    items: pl.DataFrame
    users: pl.DataFrame | None
    fingerprint: str
    missing_media: list[Problem]

    @property
    def labels(self) -> list[str]:
        return list(self.spec.interactions.labels)

    @property
    def primary_label(self) -> str:
        return self.spec.primary_label

    @property
    def context_features(self) -> list[str]:
        return [f"ctx_{c}" for c in self.spec.interactions.categorical]

    @property
    def item_features(self) -> list[str]:
        return [f"item_{c}" for c in self.spec.items.categorical]

    @property
    def user_features(self) -> list[str]:
        return [] if self.spec.users is None else [f"user_{c}" for c in self.spec.users.categorical]


def _check_categoricals(df: pl.DataFrame, path: Path, columns: list[str],
                        separators: dict[str, str]) -> list[Problem]:
    return [p for c in columns for p in check_categorical(df, path, c, separators.get(c))]


def load_items(root: Path, spec: DatasetSpec, allow_missing_media: bool) -> tuple[pl.DataFrame, list[Problem], Path]:
    s = spec.items
    path = resolve_table_path(root, s.file, "items.file")
    df = read_table(path)
    cols = [s.id, *s.text, *([s.image] if s.image else []), *s.categorical]
    problems = require_columns(df, path, cols)
    if problems:
        raise DataError(problems)
    problems += check_id(df, path, s.id)
    if not problems:
        problems += check_unique(df, path, s.id)
    for c in s.text:
        problems += check_text(df, path, c)
    if s.image and df.schema[s.image] not in (pl.String, pl.Null):
        problems.append(Problem(str(path), f"image column must be a string path, found {df.schema[s.image]}",
                                column=s.image))
    problems += _check_categoricals(df, path, s.categorical, s.multi_valued)
    if problems:
        raise DataError(problems)

    text_parts = [pl.col(c).cast(pl.String).str.strip_chars() for c in s.text]
    text = (
        pl.concat_str(text_parts, separator=TEXT_SEPARATOR, ignore_nulls=True)
        if text_parts else pl.lit(None, dtype=pl.String)
    )
    image = (pl.col(s.image).cast(pl.String) if s.image else pl.lit(None, dtype=pl.String))
    items = df.select(
        pl.int_range(pl.len(), dtype=pl.Int64).alias("item_row"),
        pl.col(s.id).alias("item_id"),
        pl.when(text.str.len_chars() > 0).then(text).otherwise(None).alias("text"),
        image.alias("image_rel"),
        *categorical_exprs(df, s.categorical, s.multi_valued, "item_"),
    )
    items, media_problems = _check_images(items, root, path, s.image, allow_missing_media)
    return items, media_problems, path


def _check_images(items: pl.DataFrame, root: Path, path: Path, column: str | None,
                  allow_missing_media: bool) -> tuple[pl.DataFrame, list[Problem]]:
    """Resolves image paths; an unreadable image is an error unless missing media is allowed.

    A path that leads outside the dataset directory (``../``, absolute, a symlink pointing
    out) is always an error, missing media allowed or not: it is never opened
    (docs/threat_model.md)."""
    problems: list[Problem] = []
    escapes: list[Problem] = []
    resolved: list[str | None] = []
    for row, rel in enumerate(items["image_rel"].to_list(), start=1):
        if rel is None or rel == "":
            resolved.append(None)
            continue
        try:
            full = resolve_inside(root, rel)
        except PathRefused as err:
            escapes.append(Problem(str(path), f"image path {err}; media must lie inside it",
                                   column=column, row=row))
            resolved.append(None)
            continue
        reason = None
        if not full.is_file():
            reason = f"image file not found: {rel}"
        else:
            try:
                with Image.open(full) as im:
                    im.verify()
            except Exception as exc:  # PIL raises several types for broken files
                reason = f"unreadable image {rel}: {type(exc).__name__}"
        if reason is None:
            resolved.append(str(full))
        else:
            problems.append(Problem(str(path), reason, column=column, row=row))
            resolved.append(None)
    if escapes:
        raise DataError(escapes[:20])
    if problems and not allow_missing_media:
        hint = Problem(str(path), f"{len(problems)} item image(s) missing or unreadable; pass "
                       "--allow-missing-media to treat them as items without an image", column=column)
        raise DataError([*problems[:20], hint])
    if problems:
        warnings.warn(f"{len(problems)} item image(s) missing or unreadable, treated as missing "
                      f"(first: {problems[0]})", stacklevel=3)
    items = items.drop("image_rel").with_columns(pl.Series("image", resolved, dtype=pl.String))
    return items, problems


def load_users(root: Path, spec: DatasetSpec) -> tuple[pl.DataFrame | None, Path | None]:
    if spec.users is None:
        return None, None
    s = spec.users
    path = resolve_table_path(root, s.file, "users.file")
    df = read_table(path)
    problems = require_columns(df, path, [s.id, *s.categorical])
    if problems:
        raise DataError(problems)
    problems = check_id(df, path, s.id)
    problems += [] if problems else check_unique(df, path, s.id)
    problems += _check_categoricals(df, path, s.categorical, s.multi_valued)
    if problems:
        raise DataError(problems)
    return df.select(pl.col(s.id).alias("user_id"),
                     *categorical_exprs(df, s.categorical, s.multi_valued, "user_")), path


def interaction_problems(df: pl.DataFrame, path: Path, spec: DatasetSpec,
                         text_ts_kind: str | None = None) -> tuple[pl.Series | None, list[Problem]]:
    """The per-row contract checks of (a chunk of) the interactions table and its timestamps
    as Int64 seconds. Rows in the problems count from the chunk's first row.

    ``text_ts_kind``: for text timestamps, the kind the whole column reads as (see
    ``validate.timestamp_seconds``); None decides it from this chunk's first value.
    """
    s = spec.interactions
    problems = require_columns(df, path, [s.user, s.item, s.timestamp, *s.labels, *s.categorical])
    if problems:
        raise DataError(problems)
    problems += check_id(df, path, s.user)
    problems += check_id(df, path, s.item)
    for label in s.labels:
        problems += check_label(df, path, label)
    ts, ts_problems = timestamp_seconds(df, path, s.timestamp, text_kind=text_ts_kind)
    problems += ts_problems
    problems += _check_categoricals(df, path, s.categorical, s.multi_valued)
    return ts, problems


def check_item_id_types(spec: DatasetSpec, id_dtype: pl.DataType, items: pl.DataFrame,
                        path: Path, items_path: Path) -> None:
    """Raises when the interactions' item ids are integers and the item table's strings, or back."""
    item_dtype = items.schema["item_id"]
    if item_dtype.is_integer() != id_dtype.is_integer():
        raise DataError(Problem(str(path), f"item ids are {id_dtype} here but {item_dtype} in {items_path.name}",
                                column=spec.interactions.item))


def canonical_interactions(df: pl.DataFrame, ts: pl.Series, spec: DatasetSpec, items: pl.DataFrame,
                           path: Path, items_path: Path, row_offset: int = 0) -> pl.DataFrame:
    """(A chunk of) the checked interactions in canonical columns; ``row_id`` counts from
    ``row_offset``. Raises DataError naming the first row whose item is not in the item table."""
    s = spec.interactions
    out = df.select(
        (pl.int_range(pl.len(), dtype=pl.Int64) + row_offset).alias("row_id"),
        pl.col(s.user).alias("user_id"),
        # Not strict: an id the item table's type cannot hold is simply not in the item table.
        pl.col(s.item).cast(items.schema["item_id"], strict=False).alias("item_id"),
        ts.alias("ts"),
        *[pl.col(c).cast(pl.Int8).alias(c) for c in s.labels],
        *categorical_exprs(df, s.categorical, s.multi_valued, "ctx_"),
    )
    out = out.join(items.select("item_id", "item_row"), on="item_id", how="left", maintain_order="left")
    row = first_row(out, pl.col("item_row").is_null())
    if row is not None:
        raise DataError(Problem(str(path), f"item '{df[s.item][row - 1]}' is not in the item table "
                                f"({items_path.name})", column=s.item, row=row + row_offset))
    return out


def check_user_id_types(spec: DatasetSpec, id_dtype: pl.DataType, users: pl.DataFrame | None,
                        users_path: Path | None, inter_path: Path) -> None:
    """Raises when the user table's ids are integers and the interactions' strings, or back."""
    if users is not None and users["user_id"].dtype.is_integer() != id_dtype.is_integer():
        raise DataError(Problem(str(users_path), f"user ids are {users['user_id'].dtype} here but "
                                f"{id_dtype} in {inter_path.name}", column=spec.users.id))


def _load_interactions(root: Path, spec: DatasetSpec, items: pl.DataFrame, items_path: Path) -> tuple[pl.DataFrame, Path]:
    path = resolve_table_path(root, spec.interactions.file, "interactions.file")
    df = read_table(path)
    ts, problems = interaction_problems(df, path, spec)
    if problems:
        raise DataError(problems)
    check_item_id_types(spec, df.schema[spec.interactions.item], items, path, items_path)
    return canonical_interactions(df, ts, spec, items, path, items_path), path


def tables_fingerprint(spec_path: Path, table_paths: list[Path]) -> str:
    h = hashlib.sha256(spec_path.read_bytes())
    for p in table_paths:
        h.update(p.name.encode())
        with p.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def dataset_fingerprint(directory: str | Path) -> str:
    """``Dataset.fingerprint`` of a directory without loading or validating its tables: the
    hash of ``dataset.toml`` and of the tables it names (what a run records as its data)."""
    root = Path(directory).resolve()
    spec = read_spec(root)
    # Same order as load_dataset: interactions, items, users.
    sections = {"interactions": spec.interactions, "items": spec.items,
                **({"users": spec.users} if spec.users else {})}
    return tables_fingerprint(root / "dataset.toml",
                              [resolve_table_path(root, s.file, f"{k}.file") for k, s in sections.items()])


def load_dataset(directory: str | Path, allow_missing_media: bool = False) -> Dataset:
    """Loads and validates a contract dataset directory.

    Raises:
        DataError: naming file, column and first offending row of every problem found.
    """
    root = Path(directory).resolve()
    spec = read_spec(root)
    items, media_problems, items_path = load_items(root, spec, allow_missing_media)
    users, users_path = load_users(root, spec)
    interactions, inter_path = _load_interactions(root, spec, items, items_path)
    check_user_id_types(spec, interactions["user_id"].dtype, users, users_path, inter_path)
    tables = [inter_path, items_path, *([users_path] if users_path else [])]
    return Dataset(
        root=root,
        spec=spec,
        interactions=interactions,
        items=items,
        users=users,
        fingerprint=tables_fingerprint(root / "dataset.toml", tables),
        missing_media=media_problems,
    )
