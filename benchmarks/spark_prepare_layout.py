"""What the Spark preparation job reads and writes besides rows: ``dataset.toml``, the dataset's
fingerprint, canonical categoricals, the shard schema and ``manifest.json``.

Each function is the pyspark/standard-library twin of a project function (named in its
docstring), so the job needs nothing from the project; ``benchmarks/spark_prepare.py`` checks
that the results equal the project's (manifest included).
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T
from spark_prepare_derive import JobError

NULL_VALUE = "<null>"
SPEC_FILE = "dataset.toml"
REQUIRED = "<required>"
# data.spec's dataclass fields in order, with their defaults.
SPEC_FIELDS = {
    "interactions": {"file": REQUIRED, "user": REQUIRED, "item": REQUIRED, "timestamp": REQUIRED,
                     "labels": REQUIRED, "categorical": [], "multi_valued": {}},
    "items": {"file": REQUIRED, "id": REQUIRED, "text": [], "image": None, "categorical": [],
              "multi_valued": {}},
    "users": {"file": REQUIRED, "id": REQUIRED, "categorical": [], "multi_valued": {}},
}
LIST_FIELDS = ("labels", "categorical", "text")
POLARS_INTS = {T.LongType: "Int64", T.IntegerType: "Int32", T.ShortType: "Int16", T.ByteType: "Int8"}


def read_spec(root: Path) -> tuple[dict, Path]:
    """``DIR/dataset.toml`` as a dict of sections with every field (``data.spec.read_spec``,
    without its checks: the dataset is assumed valid)."""
    path = root / SPEC_FILE
    if not path.is_file():
        raise JobError(f"{path}: missing file: a dataset directory needs a {SPEC_FILE}")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise JobError(f"{path}: not valid TOML: {err}") from None
    spec: dict = {"name": raw.get("name", "dataset")}
    for section, fields in SPEC_FIELDS.items():
        if section not in raw:
            if section != "users":
                raise JobError(f"{path}: missing section [{section}]")
            continue
        values = {}
        for key, default in fields.items():
            if key not in raw[section] and default is REQUIRED:
                raise JobError(f"{path}, key {section}.{key}: missing")
            value = raw[section].get(key, default)
            values[key] = [value] if key in LIST_FIELDS and isinstance(value, str) else value
        spec[section] = values
    return spec, path


def spec_to_toml(spec: dict) -> str:
    """``data.spec.spec_to_toml`` of the parsed spec (what the manifest records as ``spec``)."""

    def fmt(value) -> str:
        if isinstance(value, dict):
            return "{ " + ", ".join(f"{fmt(k)} = {fmt(v)}" for k, v in value.items()) + " }"
        if isinstance(value, list):
            return "[" + ", ".join(fmt(v) for v in value) + "]"
        return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'

    out = [f"name = {fmt(spec['name'])}", ""]
    for section, fields in SPEC_FIELDS.items():
        if spec.get(section) is None:
            continue
        out.append(f"[{section}]")
        for key in fields:
            value = spec[section].get(key)
            if value is None or (isinstance(value, dict) and not value):
                continue
            out.append(f"{key} = {fmt(value)}")
        out.append("")
    return "\n".join(out)


def resolve_table(root: Path, name: str, key: str) -> Path:
    """``data.tables.resolve_table_path``: the table inside ``root`` (symlinks followed), a
    Parquet name found as CSV with the same stem and back."""
    candidates = [name, *(str(Path(name).with_suffix(ext)) for ext in (".parquet", ".csv"))]
    for candidate in candidates:
        path = (root / candidate).resolve()
        if not path.is_relative_to(root):
            raise JobError(f"{root / SPEC_FILE}, key {key}: table file '{name}' resolves outside "
                           f"the dataset directory {root}")
        if path.is_file():
            return path
    raise JobError(f"{root / name}: missing file (named in dataset.toml, {key})")


def spec_fingerprint(spec_path: Path, tables: list[Path]) -> str:
    """``data.dataset._fingerprint``: sha256 of dataset.toml and of each table (name, bytes)."""
    h = hashlib.sha256(spec_path.read_bytes())
    for p in tables:
        h.update(p.name.encode())
        with p.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def canonical_categorical(df: DataFrame, column: str, separator: str | None, prefix: str) -> Column:
    """``data.bags.categorical_exprs``: String (null → ``<null>``) or a ``List(String)`` bag
    (split on ``separator``, pieces stripped, empty ones dropped; null → empty bag)."""
    empty = F.array().cast(T.ArrayType(T.StringType()))
    dtype = df.schema[column].dataType
    if separator is not None:
        # \Q..\E: the separator is literal text, not a regex; (?U)\s is Unicode white space,
        # what polars' strip_chars() strips.
        pieces = F.split(F.col(column).cast(T.StringType()), "\\Q" + separator + "\\E", -1)
        stripped = F.transform(pieces, lambda x: F.regexp_replace(x, r"(?U)^\s+|\s+$", ""))
        bag = F.filter(stripped, lambda x: F.length(x) > 0)
    elif isinstance(dtype, T.ArrayType):
        bag = F.transform(F.col(column), lambda x: x.cast(T.StringType()))
    else:
        if isinstance(dtype, T.FloatType | T.DoubleType | T.DecimalType):
            raise JobError(f"column {column}: {dtype.simpleString()} categoricals are not supported by "
                           "the Spark job (their text form differs from polars'); cast them first")
        return F.coalesce(F.col(column).cast(T.StringType()), F.lit(NULL_VALUE)).alias(prefix + column)
    return F.coalesce(bag, empty).alias(prefix + column)


def polars_dtype(dtype: T.DataType) -> str:
    """The polars name of a vocabulary's value type (``Vocab.to_dict``'s ``dtype``)."""
    if isinstance(dtype, T.StringType):
        return "String"
    for spark_type, name in POLARS_INTS.items():
        if isinstance(dtype, spark_type):
            return name
    raise JobError(f"vocabulary values of type {dtype.simpleString()} are not supported")


def shard_columns(layout: dict, schema: T.StructType) -> dict[str, T.DataType]:
    """``data.shards.shard_columns``: the split file's columns, name → Spark type, in order."""
    longs, bag = T.LongType(), T.ArrayType(T.LongType())

    def id_type(column: str) -> T.DataType:
        return longs if isinstance(schema[column].dataType, T.IntegralType) else T.StringType()

    cols: dict[str, T.DataType] = {"row_id": longs, "user_id": id_type("user_id"),
                                   "item_id": id_type("item_id"), "ts": longs, "user_key": longs,
                                   "item_row": longs, "idx_item": longs}
    cols |= {f"idx_{f}": bag if f in layout["bags"] else longs for f in layout["pooled"]}
    cols["hist_rows"] = bag
    cols |= {label: T.ByteType() for label in layout["labels"]}
    if layout["retention_labels"]:
        cols |= {"return_7d": T.ByteType(), "return_14d": T.ByteType(),
                 "lt7": T.IntegerType(), "lt14": T.IntegerType()}
    cols |= {"cold_item": T.BooleanType(), "cold_user": T.BooleanType()}
    cols |= {d: T.FloatType() for d in layout["dense"]}
    return cols


def manifest_text(buckets: int, prepare: dict, layout: dict, vocabs: dict[str, dict],
                  dataset: dict, split_rows: dict[str, list[int]]) -> str:
    """``data.shard_manifest.manifest_dict`` + ``manifest_json`` with ``written_by`` spark."""
    manifest = {
        "format": "recsys.prepared", "schema_version": 1, "buckets": buckets,
        "prepare": prepare, "layout": layout, "vocabs": vocabs, "dataset": dataset,
        "splits": {split: {"rows": sum(rows),
                           "files": [{"path": f"{split}/part-{b:05d}.parquet", "rows": r}
                                     for b, r in enumerate(rows)]}
                   for split, rows in split_rows.items()},
        "written_by": "spark",
    }
    return json.dumps(manifest, indent=1, allow_nan=False) + "\n"
