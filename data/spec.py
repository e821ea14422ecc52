"""The dataset contract's ``dataset.toml``, parsed into dataclasses (docs/design.md §4.1).

Unknown keys are errors, not silently ignored: a typo such as ``lables`` would otherwise drop a
label without a word.

A categorical column may be multi-valued (a bag, such as a film's genres): either a polars
``List`` column (Parquet), which needs no declaration, or a string column split on a separator
declared in the section's ``multi_valued`` table, e.g. ``multi_valued = { genres = "|" }``.
"""

from __future__ import annotations

import tomllib
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from data.errors import DataError, Problem

SPEC_FILE = "dataset.toml"


@dataclass(frozen=True)
class InteractionsSpec:
    file: str
    user: str
    item: str
    timestamp: str
    labels: list[str]
    categorical: list[str] = field(default_factory=list)
    multi_valued: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ItemsSpec:
    file: str
    id: str
    text: list[str] = field(default_factory=list)
    image: str | None = None
    categorical: list[str] = field(default_factory=list)
    multi_valued: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class UsersSpec:
    file: str
    id: str
    categorical: list[str] = field(default_factory=list)
    multi_valued: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    interactions: InteractionsSpec
    items: ItemsSpec
    users: UsersSpec | None = None

    @property
    def primary_label(self) -> str:
        return self.interactions.labels[0]


def _section(cls: type, raw: Any, section: str, problems: list[Problem]) -> Any:
    """Builds one section dataclass from its TOML table, recording every problem."""
    if not isinstance(raw, dict):
        problems.append(Problem(SPEC_FILE, f"[{section}] must be a table", column=section))
        return None
    known = {f.name: f for f in fields(cls)}
    for key in raw:
        if key not in known:
            problems.append(
                Problem(SPEC_FILE, f"unknown key '{key}' in [{section}] (known: {', '.join(known)})",
                        column=f"{section}.{key}")
            )
    kwargs: dict[str, Any] = {}
    for name, f in known.items():
        if name not in raw:
            if f.default is MISSING and f.default_factory is MISSING:
                problems.append(Problem(SPEC_FILE, f"missing key '{name}' in [{section}]",
                                        column=f"{section}.{name}"))
            continue
        value = raw[name]
        expected_list = str(f.type).startswith("list")
        if str(f.type).startswith("dict"):
            if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                problems.append(Problem(SPEC_FILE, f"'{name}' in [{section}] must be a table of "
                                        'column = "separator" (e.g. { genres = "|" })',
                                        column=f"{section}.{name}"))
                continue
            problems += _check_multi_valued(value, raw.get("categorical", []), section)
        elif expected_list:
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                problems.append(Problem(SPEC_FILE, f"'{name}' in [{section}] must be a list of column names",
                                        column=f"{section}.{name}"))
                continue
        elif not isinstance(value, str):
            problems.append(Problem(SPEC_FILE, f"'{name}' in [{section}] must be a string",
                                    column=f"{section}.{name}"))
            continue
        kwargs[name] = value
    if any(p.column and p.column.startswith(f"{section}.") for p in problems):
        return None
    return cls(**kwargs)


def _check_multi_valued(separators: dict[str, str], categorical: Any, section: str) -> list[Problem]:
    """Each declared multi-valued column must be one of the section's categoricals and have a
    non-empty separator."""
    categorical = [categorical] if isinstance(categorical, str) else categorical
    problems = []
    for column, separator in separators.items():
        where = f"{section}.multi_valued.{column}"
        if not isinstance(categorical, list) or column not in categorical:
            problems.append(Problem(SPEC_FILE, f"multi-valued column '{column}' in [{section}] must "
                                    "also be listed in 'categorical'", column=where))
        if separator == "":
            problems.append(Problem(SPEC_FILE, f"the separator of '{column}' in [{section}] is empty",
                                    column=where))
    return problems


def parse_spec(text: str) -> DatasetSpec:
    """Parses the text of a ``dataset.toml``; raises DataError naming every problem."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DataError(Problem(SPEC_FILE, f"not valid TOML: {exc}")) from None
    problems: list[Problem] = []
    for key in raw:
        if key not in {"name", "interactions", "items", "users"}:
            problems.append(Problem(SPEC_FILE, f"unknown key '{key}' (known: name, interactions, items, users)",
                                    column=key))
    name = raw.get("name", "dataset")
    if not isinstance(name, str):
        problems.append(Problem(SPEC_FILE, "'name' must be a string", column="name"))
    for required in ("interactions", "items"):
        if required not in raw:
            problems.append(Problem(SPEC_FILE, f"missing section [{required}]", column=required))
    inter = _section(InteractionsSpec, raw["interactions"], "interactions", problems) if "interactions" in raw else None
    items = _section(ItemsSpec, raw["items"], "items", problems) if "items" in raw else None
    users = _section(UsersSpec, raw["users"], "users", problems) if "users" in raw else None
    if inter is not None and not inter.labels:
        problems.append(Problem(SPEC_FILE, "[interactions] needs at least one label", column="interactions.labels"))
    if problems:
        raise DataError(problems)
    spec = DatasetSpec(name=str(name), interactions=inter, items=items, users=users)
    problems = _check_columns(spec)
    if problems:
        raise DataError(problems)
    return spec


# Columns the canonical and derived interaction frames hold besides the labels (docs/design.md
# §4.3-4.5; tests/data/test_hostile_input.py checks this against what ``prepare`` derives). A
# label keeps its own name there, so it must not be one of these.
RESERVED_COLUMNS = frozenset({
    "row_id", "user_id", "item_id", "ts", "item_row", "split", "user_key", "hist_rows",
    "cold_item", "cold_user", "return_7d", "return_14d", "lt7", "lt14", "prior_logit",
    "prior_rate", "prior_rows", "prior_item_logit", "prior_item_rate", "prior_item_rows"})
RESERVED_PREFIXES = ("_", "idx_", "pred_")


def _check_columns(spec: DatasetSpec) -> list[Problem]:
    """Each column has one role: no list names a column twice, user, item, timestamp and the
    labels are different columns, a label is not also a feature (the model would read the
    answer), and no label takes a name the derived frames use."""
    problems = []
    sections = {"interactions": spec.interactions, "items": spec.items, "users": spec.users}
    for section, sec in sections.items():
        for key in ("labels", "text", "categorical"):
            values = getattr(sec, key, None) or []
            for column in {c for c in values if values.count(c) > 1}:
                problems.append(Problem(SPEC_FILE, f"column '{column}' is listed twice in "
                                        f"[{section}] {key}", column=f"{section}.{key}"))
    inter = spec.interactions
    roles: dict[str, str] = {}
    for role, column in [("user", inter.user), ("item", inter.item), ("timestamp", inter.timestamp),
                         *(("labels", label) for label in dict.fromkeys(inter.labels))]:
        if column in roles:
            problems.append(Problem(SPEC_FILE, f"column '{column}' is both the {roles[column]} and "
                                    f"the {role} of [interactions]; each needs its own column",
                                    column=f"interactions.{role}"))
        roles.setdefault(column, role if role != "labels" else "label")
    features = {f"{prefix}{c}" for prefix, sec in (("ctx_", inter), ("item_", spec.items),
                                                   ("user_", spec.users)) if sec is not None
                for c in sec.categorical}
    for label in dict.fromkeys(inter.labels):
        if label in inter.categorical:
            problems.append(Problem(SPEC_FILE, f"label '{label}' is also a categorical feature; "
                                    "the model would read the answer", column="interactions.categorical"))
        if label in RESERVED_COLUMNS or label.startswith(RESERVED_PREFIXES) or label in features:
            problems.append(Problem(SPEC_FILE, f"label '{label}' takes a name the toolkit derives "
                                    f"itself ({', '.join(sorted(RESERVED_COLUMNS))}, a feature's "
                                    "ctx_/item_/user_ name, or a name starting with "
                                    f"{', '.join(RESERVED_PREFIXES)}); rename the column",
                                    column="interactions.labels"))
    return problems


def read_spec(directory: Path) -> DatasetSpec:
    """Reads ``DIR/dataset.toml``."""
    path = Path(directory) / SPEC_FILE
    if not Path(directory).is_dir():
        raise DataError(Problem(str(directory), "dataset directory does not exist"))
    if not path.is_file():
        raise DataError(Problem(str(path), f"missing file: a dataset directory needs a {SPEC_FILE}"))
    try:
        if not path.resolve().is_relative_to(Path(directory).resolve()):
            raise DataError(Problem(SPEC_FILE, "is a link that leads outside the dataset directory"))
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(Problem(SPEC_FILE, f"not UTF-8 text ({exc.reason} at byte {exc.start})")) from None
        except OSError as exc:
            raise DataError(Problem(SPEC_FILE, f"cannot read: {exc.strerror or exc}")) from None
        return parse_spec(text)
    except DataError as err:
        # Name the real path rather than the bare file name.
        raise DataError([Problem(str(path), p.message, p.column, p.row) for p in err.problems]) from None


def spec_to_toml(spec: DatasetSpec) -> str:
    """Writes a spec back as TOML (used by synth and adapters)."""

    def fmt(value: Any) -> str:
        if isinstance(value, dict):
            return "{ " + ", ".join(f"{fmt(k)} = {fmt(v)}" for k, v in value.items()) + " }"
        if isinstance(value, list):
            return "[" + ", ".join(fmt(v) for v in value) + "]"
        return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'

    out = [f"name = {fmt(spec.name)}", ""]
    for section in ("interactions", "items", "users"):
        sec = getattr(spec, section)
        if sec is None:
            continue
        out.append(f"[{section}]")
        for f in fields(sec):
            value = getattr(sec, f.name)
            if value is None or (isinstance(value, dict) and not value):
                continue
            out.append(f"{f.name} = {fmt(value)}")
        out.append("")
    return "\n".join(out)
