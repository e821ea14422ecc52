"""TOML ↔ nested dataclasses with strict checking: the config is the one source of truth.

- unknown keys, wrong types and out-of-range values are ``UsageError``s naming the dotted key;
- a TOML file may say ``extends = "em3"`` to start from a packaged preset (or another file);
- ``--set a.b=value`` overrides are parsed as TOML values (``lr=3e-4``, ``mode="lora"``,
  ``sizes=[64, 32]``), falling back to a bare string.

Field metadata ``{"min": x}`` / ``{"max": x}`` / ``{"choices": (...)}`` declare the allowed range.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from recsys.errors import UsageError

T = TypeVar("T")
PRESET_DIR = Path(__file__).resolve().parent / "presets"


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def read_toml(source: str | Path, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """Reads a preset name or a TOML path, resolving ``extends`` recursively."""
    path = Path(source)
    if not path.suffix and (PRESET_DIR / f"{source}.toml").is_file():
        path = PRESET_DIR / f"{source}.toml"
    if not path.is_file():
        raise UsageError(f"config '{source}' is neither a file nor a preset "
                         f"(presets: {', '.join(preset_names())})")
    if str(path) in seen:
        raise UsageError(f"config {path}: 'extends' forms a cycle ({' -> '.join(seen)})")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config {path}: not valid TOML: {exc}") from None
    except (UnicodeDecodeError, OSError) as exc:
        raise UsageError(f"config {path}: cannot read it as UTF-8 text ({exc})") from None
    base = raw.pop("extends", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise UsageError(f"config {path}: 'extends' must be a preset name or a file path, found {base!r}")
    parent_dir = path.parent
    base_source = parent_dir / base if (parent_dir / base).is_file() else base
    return deep_merge(read_toml(base_source, (*seen, str(path))), raw)


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=1`` → (["a", "b"], 1)."""
    if "=" not in text:
        raise UsageError(f"--set expects key=value, got '{text}'")
    key, value = text.split("=", 1)
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    return key.strip().split("."), parsed


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    raw = deep_merge(raw, {})
    for text in overrides:
        keys, value = parse_override(text)
        node = raw
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise UsageError(f"--set {text}: '{k}' is not a section")
        node[keys[-1]] = value
    return raw


def _coerce(value: Any, tp: Any, key: str, problems: list[str]) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key, problems)
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            problems.append(f"{key}: must be one of {list(typing.get_args(tp))}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            problems.append(f"{key}: must be a table, got {type(value).__name__}")
            return None
        return _build(tp, value, key, problems)
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            problems.append(f"{key}: must be a list, got {value!r}")
            return value
        (inner,) = typing.get_args(tp)[:1] or (Any,)
        items = [_coerce(v, inner, f"{key}[{i}]", problems) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            problems.append(f"{key}: must be a table, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            problems.append(f"{key}: must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{key}: must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            problems.append(f"{key}: must be a number, got {value!r}")
            return value
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            problems.append(f"{key}: must be a string, got {value!r}")
        return value
    return value


def _build(cls: type[T], raw: dict[str, Any], prefix: str, problems: list[str]) -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    before = len(problems)
    for k in raw:
        if k not in fields:
            where = f"{prefix}.{k}" if prefix else k
            problems.append(f"{where}: unknown key (known: {', '.join(fields)})")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in raw:
            continue
        key = f"{prefix}.{name}" if prefix else name
        value = _coerce(raw[name], hints[name], key, problems)
        meta = f.metadata
        if isinstance(value, float) and not math.isfinite(value):
            problems.append(f"{key}: must be a finite number, got {value!r}")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            if "min" in meta and value < meta["min"]:
                problems.append(f"{key}: must be >= {meta['min']}, got {value!r}")
            if "max" in meta and value > meta["max"]:
                problems.append(f"{key}: must be <= {meta['max']}, got {value!r}")
        if "choices" in meta and value not in meta["choices"]:
            problems.append(f"{key}: must be one of {list(meta['choices'])}, got {value!r}")
        kwargs[name] = value
    if len(problems) > before:
        return None  # type: ignore[return-value]
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:  # a dataclass's own __post_init__ checks
        problems.append(f"{prefix or cls.__name__}: {exc}")
        return None  # type: ignore[return-value]


def config_from_dict(cls: type[T], raw: dict[str, Any]) -> T:
    problems: list[str] = []
    cfg = _build(cls, raw, "", problems)
    if problems:
        raise UsageError([f"config {p}" for p in problems])
    return cfg


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Dataclass → plain dict (tuples become lists, None values dropped: TOML has no null)."""

    def clean(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items() if x is not None}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        return v

    return clean(dataclasses.asdict(cfg))


def to_toml(d: dict[str, Any]) -> str:
    """Minimal TOML writer for config dicts (scalars, lists, nested tables)."""

    def fmt(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(fmt(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k} = {fmt(x)}" for k, x in v.items()) + "}"
        raise TypeError(f"cannot write {type(v).__name__} to TOML")

    def emit(table: dict[str, Any], path: str, out: list[str]) -> None:
        # A non-empty table becomes a [section]; an empty one stays inline as {}.
        scalars = {k: v for k, v in table.items() if not (isinstance(v, dict) and v)}
        sections = {k: v for k, v in table.items() if k not in scalars}
        if path:
            out.append(f"\n[{path}]")
        out.extend(f"{k} = {fmt(v)}" for k, v in scalars.items())
        for k, v in sections.items():
            emit(v, f"{path}.{k}" if path else k, out)

    out: list[str] = []
    emit(d, "", out)
    return "\n".join(out).lstrip() + "\n"
