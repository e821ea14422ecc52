"""The ``manifest.json`` of a prepared-shard directory: what the shards hold (docs/prepared_shards.md).

Every writer (``data.shards.write_shards``, the bounded-memory preparation, the Spark job)
writes it last, and every reader goes through ``read_manifest``, which checks the format and
schema version and confines every file it names to the directory: a manifest is input that may
come from someone else (docs/threat_model.md), so ``"path": "../../etc/passwd"`` is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data.batch import FeatureLayout
from data.errors import DataError, Problem
from data.paths import PathRefused, resolve_inside
from data.prepare import PrepareConfig
from data.vocab import Vocab

SHARD_FORMAT = "recsys.prepared"
SHARD_SCHEMA_VERSION = 1
DEFAULT_BUCKETS = 16
MANIFEST_FILE = "manifest.json"
ITEMS_FILE = "items.parquet"
SHARD_SPLITS = ("train", "valid", "test")
WRITERS = ("polars", "polars-bounded", "spark")


def part_path(split: str, bucket: int) -> str:
    """The file of ``split``'s user bucket ``bucket``, relative to the shard directory."""
    return f"{split}/part-{bucket:05d}.parquet"


@dataclass(frozen=True)
class ShardFile:
    """One split file: its resolved path and row count."""

    path: Path
    rows: int


@dataclass(frozen=True)
class ShardManifest:
    """A read and checked manifest.

    Attributes:
        root: the shard directory (resolved).
        buckets: user buckets per split; every split has exactly this many files.
        prepare: the preparation settings the rows were made with.
        layout: the model's feature layout (vocabulary sizes, labels, dense features, bags).
        vocabs: the train vocabularies, name → Vocab.
        dataset: ``fingerprint``, ``name``, ``labels``, ``primary_label``, ``spec`` (the source
            ``dataset.toml`` text) and ``dir`` (where it was prepared from) of the source dataset.
        splits: split → its files in bucket order.
        written_by: which engine wrote the shards (one of ``WRITERS``).
    """

    root: Path
    buckets: int
    prepare: PrepareConfig
    layout: FeatureLayout
    vocabs: dict[str, Vocab]
    dataset: dict[str, Any]
    splits: dict[str, list[ShardFile]]
    written_by: str

    def rows(self, split: str) -> int:
        return sum(f.rows for f in self.splits[split])

    @property
    def items_path(self) -> Path:
        return self.root / ITEMS_FILE


def manifest_dict(buckets: int, prepare: PrepareConfig, layout: FeatureLayout,
                  vocabs: dict[str, Vocab], dataset: dict[str, Any],
                  split_rows: dict[str, list[int]], written_by: str) -> dict[str, Any]:
    """The manifest as JSON-ready data; ``split_rows``: split → rows per bucket file."""
    if written_by not in WRITERS:
        raise ValueError(f"written_by must be one of {WRITERS}, got {written_by!r}")
    return {
        "format": SHARD_FORMAT,
        "schema_version": SHARD_SCHEMA_VERSION,
        "buckets": buckets,
        "prepare": prepare.to_dict(),
        "layout": layout.to_dict(),
        "vocabs": {name: v.to_dict() for name, v in vocabs.items()},
        "dataset": dataset,
        "splits": {split: {"rows": sum(rows),
                           "files": [{"path": part_path(split, b), "rows": r} for b, r in enumerate(rows)]}
                   for split, rows in split_rows.items()},
        "written_by": written_by,
    }


def manifest_json(manifest: dict[str, Any]) -> str:
    """The manifest's text: one fixed formatting, so equal manifests are equal files."""
    return json.dumps(manifest, indent=1, allow_nan=False) + "\n"


def read_manifest(directory: str | Path) -> ShardManifest:
    """Reads and checks ``DIR/manifest.json``.

    Raises:
        DataError: one line naming the file and the key: no such directory or manifest, not
            JSON, another format or schema version, a missing or malformed key, a file path
            outside the directory, row counts that do not add up.
    """
    root = Path(directory)
    if not root.is_dir():
        raise DataError(Problem(str(root), "prepared-shard directory does not exist"))
    root = root.resolve()
    where = str(root / MANIFEST_FILE)
    try:
        path = resolve_inside(root, MANIFEST_FILE)
    except PathRefused as err:
        raise DataError(Problem(where, f"manifest {err}")) from None
    if not path.is_file():
        raise DataError(Problem(where, "missing file: not a prepared-shard directory "
                                "(make one with `recsys data shard`)"))
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(Problem(where, f"not valid JSON: {err}")) from None
    if not isinstance(raw, dict):
        raise DataError(Problem(where, "must be a JSON object"))
    if raw.get("format") != SHARD_FORMAT:
        raise DataError(Problem(where, f"format is {raw.get('format')!r}, expected {SHARD_FORMAT!r}",
                                column="format"))
    if raw.get("schema_version") != SHARD_SCHEMA_VERSION:
        raise DataError(Problem(where, f"schema_version {raw.get('schema_version')!r}: this toolkit "
                                f"reads schema_version {SHARD_SCHEMA_VERSION}; write the shards again "
                                "with it", column="schema_version"))
    return _parse(raw, root, where)


def _parse(raw: dict[str, Any], root: Path, where: str) -> ShardManifest:
    key = "buckets"
    try:
        buckets = raw["buckets"]
        if not isinstance(buckets, int) or isinstance(buckets, bool) or buckets < 1:
            raise ValueError(f"must be an integer >= 1, got {buckets!r}")
        key = "prepare"
        prepare = PrepareConfig(**raw["prepare"])
        key = "layout"
        layout = FeatureLayout.from_dict(raw["layout"])
        key = "vocabs"
        vocabs = {name: Vocab.from_dict(v) for name, v in raw["vocabs"].items()}
        key = "dataset"
        dataset = raw["dataset"]
        if not isinstance(dataset, dict) or not isinstance(dataset.get("fingerprint"), str):
            raise ValueError("must be an object with a 'fingerprint' string")
        key = "written_by"
        written_by = raw["written_by"]
        if written_by not in WRITERS:
            raise ValueError(f"must be one of {', '.join(WRITERS)}, got {written_by!r}")
        key = "splits"
        splits = {split: _split_files(raw["splits"][split], root, buckets, f"splits.{split}")
                  for split in SHARD_SPLITS}
    except DataError as err:
        raise DataError([Problem(where, p.message, p.column) for p in err.problems]) from None
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        what = f"missing key {err}" if isinstance(err, KeyError) else str(err)
        raise DataError(Problem(where, f"malformed '{key}': {what}", column=key)) from None
    try:
        resolve_inside(root, ITEMS_FILE)
    except PathRefused as err:
        raise DataError(Problem(where, f"{ITEMS_FILE} {err}", column="items")) from None
    return ShardManifest(root=root, buckets=buckets, prepare=prepare, layout=layout, vocabs=vocabs,
                         dataset=dataset, splits=splits, written_by=written_by)


def _split_files(raw: Any, root: Path, buckets: int, key: str) -> list[ShardFile]:
    """A split's files, each confined to ``root``; exactly ``buckets`` of them, rows adding up."""
    files = raw["files"]
    if not isinstance(files, list) or len(files) != buckets:
        raise DataError(Problem("", f"needs exactly {buckets} files (one per bucket), "
                                f"found {len(files) if isinstance(files, list) else files!r}", key))
    out = []
    for i, entry in enumerate(files):
        rows = entry["rows"]
        if not isinstance(rows, int) or isinstance(rows, bool) or rows < 0:
            raise DataError(Problem("", f"file {i}: rows must be an integer >= 0, got {rows!r}", key))
        try:
            path = resolve_inside(root, str(entry["path"]))
        except PathRefused as err:
            raise DataError(Problem("", f"file {i}: {err}; shard files must lie inside the "
                                    "shard directory", key)) from None
        out.append(ShardFile(path=path, rows=rows))
    if raw["rows"] != sum(f.rows for f in out):
        raise DataError(Problem("", f"rows {raw['rows']!r} is not the sum of its files' rows "
                                f"({sum(f.rows for f in out)})", key))
    return out


def is_shard_dir(directory: str | Path) -> bool:
    """Whether ``directory`` holds prepared shards (a manifest) rather than a dataset."""
    return (Path(directory) / MANIFEST_FILE).is_file()
