"""Hostile and corrupted input (docs/threat_model.md): paths that leave the dataset directory are
refused, the formerly crashing inputs are one-line errors, and a property-based search over
corrupted datasets and configs finds only success or exit 2, never a traceback or a written file.

The CLI runs in-process (``recsys.cli.main``), as a user's command would, without a process
start per example.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import tomllib
import warnings
from datetime import timedelta
from pathlib import Path
from tempfile import TemporaryDirectory

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data.dataset import load_dataset
from data.errors import DataError
from data.prepare import PrepareConfig, prepare
from data.spec import RESERVED_COLUMNS, RESERVED_PREFIXES
from recsys.cli import main
from tests.data.contract_fixtures import SPEC, tiny_tables, write_dataset


def run_cli(*args: str) -> tuple[int, str, str]:
    """``recsys ARGS`` in this process: (exit status, stdout, stderr). An exception that the
    CLI lets through (a traceback for a user) fails the calling test."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        status = main(list(args))
    return status, out.getvalue(), err.getvalue()


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its size and modification time."""
    return {str(p.relative_to(root)): (p.lstat().st_size, p.lstat().st_mtime_ns)
            for p in root.rglob("*")}


def refused(root: Path, *fragments: str, allow_missing_media: bool = False) -> str:
    """Runs ``data check`` on ``root``; asserts exit 2, error lines only, each fragment in them
    and nothing written; returns stderr."""
    before = snapshot(root.parent)
    flags = ["--allow-missing-media"] if allow_missing_media else []
    status, _, err = run_cli("data", "check", str(root), *flags)
    assert status == 2, err
    lines = err.splitlines()
    assert lines and all(line.startswith("error: ") for line in lines), err
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in {err!r}"
    assert snapshot(root.parent) == before, "a refused check must write nothing"
    return err


# ---- paths confined to the dataset directory -----------------------------------------------


def _outside_table(tmp_path: Path) -> Path:
    """A readable table outside the dataset: what an escaping name would read."""
    outside = tmp_path / "elsewhere" / "users.parquet"
    outside.parent.mkdir()
    tiny_tables()["users"].write_parquet(outside)
    return outside


@pytest.mark.parametrize("how", ["relative", "absolute", "symlink", "etc_hostname"])
def test_a_table_outside_the_dataset_is_refused(tmp_path, how):
    outside = _outside_table(tmp_path)
    root = write_dataset(tmp_path / "ds")
    name = {"relative": "../elsewhere/users.parquet", "absolute": str(outside),
            "symlink": "users_link.parquet", "etc_hostname": "../../../../etc/hostname"}[how]
    if how == "symlink":
        (root / name).symlink_to(outside)
    (root / "dataset.toml").write_text(SPEC.replace('file = "users.parquet"', f'file = "{name}"'))
    err = refused(root, "dataset.toml", "column 'users.file'", "outside the dataset directory")
    assert len(err.splitlines()) == 1
    # A link that stays inside the directory is followed like any path.
    if how == "symlink":
        (root / name).unlink()
        (root / name).symlink_to(root / "users.parquet")
        assert run_cli("data", "check", str(root))[0] == 0


@pytest.mark.parametrize("how", ["relative", "absolute", "symlink"])
@pytest.mark.parametrize("allow_missing_media", [False, True])
def test_an_image_outside_the_dataset_is_refused_and_never_opened(tmp_path, how, allow_missing_media):
    root = write_dataset(tmp_path / "ds")
    outside = tmp_path / "outside.png"
    (root / "images" / "1.png").rename(outside)
    path = {"relative": "../outside.png", "absolute": str(outside), "symlink": "images/1.png"}[how]
    if how == "symlink":
        (root / "images" / "1.png").symlink_to(outside)
    tables = tiny_tables()
    tables["items"] = tables["items"].with_columns(
        pl.when(pl.col("iid") == 1).then(pl.lit(path)).otherwise(pl.col("img")).alias("img"))
    tables["items"].write_parquet(root / "items.parquet")
    err = refused(root, "items.parquet", "column 'img', row 1", "outside the dataset directory",
                  allow_missing_media=allow_missing_media)
    # One line: a path outside is refused, never reported as merely missing or unreadable.
    assert len(err.splitlines()) == 1


def test_a_dataset_toml_linked_from_outside_is_refused(tmp_path):
    root = write_dataset(tmp_path / "ds")
    (tmp_path / "spec.toml").write_text(SPEC)
    (root / "dataset.toml").unlink()
    (root / "dataset.toml").symlink_to(tmp_path / "spec.toml")
    refused(root, "dataset.toml", "outside the dataset directory")


# ---- the inputs that crashed, and the one silently accepted ---------------------------------


def test_text_epoch_timestamps_with_a_word_are_one_line(tmp_path):
    """Was a polars ComputeError from datetime inference."""
    tables = tiny_tables()
    ts = [str(v) for v in tables["interactions"]["ts"].to_list()]
    ts[5] = "yesterday"
    tables["interactions"] = tables["interactions"].with_columns(pl.Series("ts", ts))
    root = write_dataset(tmp_path / "ds", tables)
    err = refused(root, "interactions.parquet", "column 'ts', row 6", "unparsable timestamp 'yesterday'")
    assert len(err.splitlines()) == 1
    # The same column without the word reads as integer seconds.
    ts[5] = str(tiny_tables()["interactions"]["ts"][5])
    tables["interactions"] = tables["interactions"].with_columns(pl.Series("ts", ts))
    root = write_dataset(tmp_path / "ok", tables)
    assert load_dataset(root).interactions["ts"].to_list() == tiny_tables()["interactions"]["ts"].to_list()


@pytest.mark.parametrize(("edit", "fragments"), [
    # Was a polars DuplicateError.
    (('labels = ["click", "like"]', 'labels = ["like", "like"]'),
     ["column 'interactions.labels'", "'like' is listed twice"]),
    # Was accepted without a word.
    (('item = "iid"', 'item = "uid"'), ["column 'interactions.item'", "both the user and the item"]),
    (('labels = ["click", "like"]', 'labels = ["click", "uid"]'), ["both the user and the labels"]),
    (('categorical = ["device"]', 'categorical = ["device", "like"]'),
     ["label 'like' is also a categorical feature"]),
    (('labels = ["click", "like"]', 'labels = ["click", "split"]'), ["label 'split' takes a name"]),
    (('categorical = ["device"]', 'categorical = ["device", "device"]'), ["'device' is listed twice"]),
])
def test_one_column_in_two_roles_is_one_line(tmp_path, edit, fragments):
    root = write_dataset(tmp_path / "ds", spec=SPEC.replace(*edit))
    err = refused(root, "dataset.toml", *fragments)
    assert len(err.splitlines()) == 1


def test_reserved_label_names_cover_every_derived_column(tmp_path):
    """``RESERVED_COLUMNS`` is what keeps a label from clashing with a derived column: every
    column ``prepare`` adds (all options on) must be covered by it."""
    dataset = load_dataset(write_dataset(tmp_path / "ds"))
    frame = prepare(dataset, PrepareConfig(retention=True, prior_rate=True, item_prior_rate=True)).frame
    features = {*dataset.context_features, *dataset.item_features, *dataset.user_features}
    derived = [c for c in frame.columns if c not in dataset.labels]
    uncovered = [c for c in derived
                 if c not in RESERVED_COLUMNS | features and not c.startswith(RESERVED_PREFIXES)]
    assert not uncovered


# ---- property-based corruption ---------------------------------------------------------------

COLUMNS = {"interactions": ["uid", "iid", "ts", "click", "like", "device"],
           "items": ["iid", "title", "img", "brand"], "users": ["uid", "region"]}
TABLES = list(COLUMNS)
ODD_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
    st.sampled_from(["yesterday", "1700000000", "2024-01-01T00:00:00", "2024-13-45", "1e9",
                     "../outside.png", "/etc/hostname", "images/1.png", "images", "a|b||",
                     "\u00e9t\u00e9", "x\x00y", "9" * 30]),
)
ODD_DTYPES = st.sampled_from([
    pl.String, pl.Float64, pl.Float32, pl.Int8, pl.UInt64, pl.Boolean, pl.Categorical, pl.Null,
    pl.Date, pl.Datetime("us", "Europe/Paris"), pl.Duration("ms"), pl.List(pl.String),
    pl.List(pl.Int64), pl.Decimal(10, 2), pl.Binary])
TOML_VALUES = st.recursive(
    st.one_of(st.sampled_from([c for cs in COLUMNS.values() for c in cs]), st.text(max_size=8),
              st.integers(min_value=-(2**63), max_value=2**63 - 1), st.booleans(),
              st.floats(allow_nan=True, allow_infinity=True)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.sampled_from(["a", "file", "id", "|"]), inner, max_size=2)),
    max_leaves=4)
SPEC_KEYS = [("interactions", k) for k in ("file", "user", "item", "timestamp", "labels", "categorical",
                                           "multi_valued")] + \
            [("items", k) for k in ("file", "id", "text", "image", "categorical", "multi_valued")] + \
            [("users", k) for k in ("file", "id", "categorical")] + [("name", None), ("extra", None)]

MUTATIONS = st.one_of(
    st.tuples(st.just("cell"), st.sampled_from(TABLES), st.integers(0, 50), st.integers(0, 5), ODD_VALUES),
    st.tuples(st.just("cast"), st.sampled_from(TABLES), st.integers(0, 5), ODD_DTYPES),
    st.tuples(st.just("drop"), st.sampled_from(TABLES), st.integers(0, 5)),
    st.tuples(st.just("rows"), st.sampled_from(TABLES), st.integers(0, 3)),
    st.tuples(st.just("duplicate"), st.sampled_from(TABLES), st.integers(0, 50)),
    st.tuples(st.just("csv"), st.sampled_from(TABLES), st.sampled_from(["utf-8", "latin-1", "utf-16"])),
    st.tuples(st.just("bytes"), st.sampled_from(TABLES + ["dataset.toml", "image"]),
              st.binary(max_size=64), st.booleans()),
    st.tuples(st.just("spec"), st.sampled_from(SPEC_KEYS), st.one_of(st.none(), TOML_VALUES)),
    st.tuples(st.just("spec_text"), st.text(max_size=30)),
)


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are TOML basic-string escapes
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return "{ " + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + " }"


def _spec_text(raw: dict) -> str:
    lines = [f"{json.dumps(k)} = {_toml(v)}" for k, v in raw.items() if not isinstance(v, dict)]
    for section, table in raw.items():
        if isinstance(table, dict):
            lines.append(f"[{json.dumps(section)}]")
            lines += [f"{json.dumps(k)} = {_toml(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def _column_series(df: pl.DataFrame, col: str, values: list) -> pl.Series:
    with contextlib.suppress(Exception):
        series = pl.Series(col, values, strict=False)
        if series.dtype != pl.Object:
            return series
    # Values no polars dtype holds together: keep them as text.
    return pl.Series(col, [None if v is None else str(v) for v in values], dtype=pl.String)


def corrupt(root: Path, mutations: list[tuple]) -> None:
    """Writes the tiny dataset to ``root`` with ``mutations`` applied, in order."""
    tables, spec = tiny_tables(), tomllib.loads(SPEC)
    files: dict[str, bytes | None] = {}
    suffix = {t: ".parquet" for t in TABLES}
    csv_encoding: dict[str, str] = {}
    spec_tail = ""
    for m in mutations:
        kind, target = m[0], m[1]
        df = tables.get(target) if isinstance(target, str) else None
        if kind == "cell" and df is not None and df.height:
            col = df.columns[m[3] % df.width]
            values = df[col].to_list()
            values[m[2] % df.height] = m[4]
            tables[target] = df.with_columns(_column_series(df, col, values))
        elif kind == "cast" and df is not None:
            col = df.columns[m[2] % df.width]
            with contextlib.suppress(Exception):  # a cast polars cannot do leaves the column
                tables[target] = df.with_columns(pl.col(col).cast(m[3], strict=False))
        elif kind == "drop" and df is not None and df.width > 1:
            tables[target] = df.drop(df.columns[m[2] % df.width])
        elif kind == "rows" and df is not None:
            tables[target] = df.head(m[2])
        elif kind == "duplicate" and df is not None and df.height:
            tables[target] = pl.concat([df, df.slice(m[2] % df.height, 1)])
        elif kind == "csv":
            suffix[target], csv_encoding[target] = ".csv", m[2]
        elif kind == "bytes":
            files[target] = m[2] if m[3] else None  # None: the file is removed
        elif kind == "spec":
            (section, key), value = m[1], m[2]
            if key is None:
                spec[section] = value if value is not None else "x"
            elif isinstance(spec.get(section), dict):
                if value is None:
                    spec[section].pop(key, None)
                else:
                    spec[section][key] = value
        elif kind == "spec_text":
            spec_tail += m[1]
    write_dataset(root, spec=_spec_text(spec) + spec_tail)  # the valid tables and images
    for name, df in tables.items():
        path = root / f"{name}{suffix[name]}"
        if suffix[name] == ".csv":
            (root / f"{name}.parquet").unlink()
            with contextlib.suppress(Exception):  # a table CSV cannot hold (lists) is left out
                flat = df.with_columns(pl.col(c).cast(pl.String, strict=False) for c in df.columns
                                       if not df.schema[c].is_numeric() and df.schema[c] != pl.Boolean)
                path.write_bytes(flat.write_csv().encode(csv_encoding[name], errors="replace"))
        else:
            df.write_parquet(path)
    for name, data in files.items():
        path = root / ("images/2.png" if name == "image" else
                       name if name == "dataset.toml" else f"{name}{suffix[name]}")
        if data is None:
            path.unlink(missing_ok=True)
        else:
            path.write_bytes(data)


def assert_success_or_one_line_per_problem(root: Path, args: list[str]) -> None:
    before = snapshot(root.parent)
    status, out, err = run_cli(*args)
    assert status in (0, 2), (status, err)
    if status == 2:
        lines = err.splitlines()
        # Each line names the culprit: a file of the dataset (its path), column and row.
        assert lines and all(line.startswith(f"error: {root}") for line in lines), err
    else:
        assert "rows" in out
    assert "Traceback" not in err
    assert snapshot(root.parent) == before, "no output, half-written or whole"


@settings(max_examples=150, deadline=timedelta(seconds=10), derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mutations=st.lists(MUTATIONS, min_size=1, max_size=3), allow_missing_media=st.booleans())
def test_corrupted_datasets_succeed_or_exit_2_naming_the_culprit(mutations, allow_missing_media):
    with TemporaryDirectory() as tmp:
        root = Path(tmp).resolve() / "ds"
        (root.parent / "outside.png").write_bytes((Path(__file__).parent / "__init__.py").read_bytes())
        corrupt(root, mutations)
        args = ["data", "check", str(root), *(["--allow-missing-media"] if allow_missing_media else [])]
        assert_success_or_one_line_per_problem(root, args)


def test_odd_train_configs_exit_2_without_writing_a_run(tmp_path):
    """A training config with odd values, odd types or broken TOML stops with exit 2 before any
    run directory exists. ``--data`` names a missing directory, so a config that happens to be
    valid stops there, also with exit 2, rather than training."""
    import recsys.training.train  # noqa: F401  (torchrec's import is not what the deadline measures)

    keys = ["train.epochs", "train.batch_size", "train.early_stop_metric", "train.threads",
            "ranking.embedding_dim", "ranking.interaction", "ranking.over_arch", "content.seq_mode",
            "content.tokens", "data.split", "data.max_history", "optim.weight_decay",
            "cic.temperature", "loss.retention_weight", "tracking.uri", "nonsense.key", "train.nope"]
    values = st.one_of(TOML_VALUES, st.sampled_from([0, -1, 10**30, "", "off", [1, "a"], {"x": 1}]))

    @settings(max_examples=25, deadline=timedelta(seconds=10), derandomize=True,
              suppress_health_check=[HealthCheck.too_slow])
    @given(edits=st.lists(st.tuples(st.sampled_from(keys), values), min_size=1, max_size=3),
           extends=st.sampled_from(["id_only", "em3", "nope", 5]),
           tail=st.one_of(st.just(""), st.text(max_size=20), st.binary(max_size=8)))
    def check(edits, extends, tail):
        with TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            raw: dict = {"extends": extends}
            for key, value in edits:
                section, name = key.split(".")
                raw.setdefault(section, {})[name] = value
            config = tmp / "config.toml"
            config.write_bytes(_spec_text(raw).encode() + (tail if isinstance(tail, bytes) else tail.encode()))
            status, _, err = run_cli("train", str(config), "--data", str(tmp / "no-data"),
                                     "--out", str(tmp / "run"), "--no-track", "--quiet")
            assert status == 2, err
            lines = err.splitlines()
            assert lines and all(line.startswith("error: ") for line in lines), err
            assert not (tmp / "run").exists()

    check()


@pytest.mark.parametrize("case", ["yesterday", "escaping_image", "duplicate_labels"])
def test_training_on_a_refused_dataset_writes_no_run(tmp_path, case):
    tables, spec = tiny_tables(), SPEC
    if case == "yesterday":
        ts = [str(v) for v in tables["interactions"]["ts"].to_list()]
        tables["interactions"] = tables["interactions"].with_columns(pl.Series("ts", ["yesterday", *ts[1:]]))
    elif case == "escaping_image":
        tables["items"] = tables["items"].with_columns(pl.lit("../../outside.png").alias("img"))
    else:
        spec = SPEC.replace('labels = ["click", "like"]', 'labels = ["click", "click"]')
    root = write_dataset(tmp_path / "ds", tables, spec)
    status, _, err = run_cli("train", "id_only", "--data", str(root), "--out", str(tmp_path / "run"),
                             "--no-track", "--quiet")
    assert status == 2 and err.startswith(f"error: {root}"), err
    assert not (tmp_path / "run").exists()
    assert os.listdir(tmp_path) == ["ds"]


def test_a_data_error_is_raised_not_printed_by_the_library(tmp_path):
    """The library raises ``DataError`` (the CLI prints it): callers can catch it."""
    tables = tiny_tables()
    tables["items"] = tables["items"].with_columns(pl.lit("/etc/hostname").alias("img"))
    with pytest.raises(DataError, match="outside the dataset directory"):
        load_dataset(write_dataset(tmp_path / "ds", tables))
