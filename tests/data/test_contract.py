"""Every class of contract violation gives its own clear message and exit status 2."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest

from data.dataset import dataset_fingerprint, load_dataset
from data.errors import DataError
from recsys.cli import main
from tests.data.contract_fixtures import SPEC, tiny_tables, write_dataset


def _with(table: str, fn: Callable[[pl.DataFrame], pl.DataFrame]) -> dict[str, pl.DataFrame]:
    tables = tiny_tables()
    tables[table] = fn(tables[table])
    return tables


def _set_row(col: str, row: int, value, dtype=None) -> Callable[[pl.DataFrame], pl.DataFrame]:
    """Replaces the value of `col` at 0-based `row`."""

    def fn(df: pl.DataFrame) -> pl.DataFrame:
        values = df[col].to_list()
        values[row] = value
        return df.with_columns(pl.Series(col, values, dtype=dtype or df.schema[col], strict=False))

    return fn


def _missing_file(root: Path) -> None:
    (root / "users.parquet").unlink()


def _corrupt_image(root: Path) -> None:
    (root / "images" / "3.png").write_bytes(b"not a png")


# (case id, tables, spec text, post-write mutation, expected fragments of the message)
CASES = [
    ("missing_file", None, SPEC, _missing_file, ["users.parquet", "missing file"]),
    ("missing_column", _with("interactions", lambda d: d.drop("device")), SPEC, None,
     ["interactions.parquet", "column 'device'", "missing column"]),
    ("wrong_dtype_label", _with("interactions", lambda d: d.with_columns(pl.col("like").cast(pl.String))),
     SPEC, None, ["interactions.parquet", "column 'like'", "must be numeric"]),
    ("wrong_dtype_id", _with("items", lambda d: d.with_columns(pl.col("iid").cast(pl.Float64))),
     SPEC, None, ["items.parquet", "column 'iid'", "integer or string"]),
    ("label_2", _with("interactions", _set_row("click", 6, 2)), SPEC, None,
     ["interactions.parquet", "column 'click'", "row 7", "found 2"]),
    ("null_user", _with("interactions", _set_row("uid", 4, None)), SPEC, None,
     ["interactions.parquet", "column 'uid'", "row 5", "null id"]),
    ("null_timestamp", _with("interactions", _set_row("ts", 9, None)), SPEC, None,
     ["interactions.parquet", "column 'ts'", "row 10", "null timestamp"]),
    ("unknown_item", _with("interactions", _set_row("iid", 11, 999)), SPEC, None,
     ["interactions.parquet", "column 'iid'", "row 12", "'999' is not in the item table"]),
    ("duplicate_item", _with("items", _set_row("iid", 5, 2)), SPEC, None,
     ["items.parquet", "column 'iid'", "row 6", "duplicate id '2'"]),
    ("unparsable_timestamp",
     _with("interactions", lambda d: d.with_columns(pl.col("ts").cast(pl.Datetime("ms")).dt.strftime("%Y-%m-%d"))
           .pipe(_set_row("ts", 3, "not-a-date"))),
     SPEC, None, ["interactions.parquet", "column 'ts'", "row 4", "unparsable timestamp 'not-a-date'"]),
    ("empty_table", _with("users", lambda d: d.head(0)), SPEC, None, ["users.parquet", "table is empty"]),
    ("bad_toml", None, SPEC.replace('name = "tiny"', 'name = "tiny'), None, ["dataset.toml", "not valid TOML"]),
    ("unknown_key", None, SPEC.replace('labels = ["click", "like"]', 'lables = ["click", "like"]'), None,
     ["dataset.toml", "unknown key 'lables' in [interactions]"]),
    ("missing_image_file", None, SPEC, lambda root: (root / "images" / "2.png").unlink(),
     ["items.parquet", "column 'img'", "row 2", "image file not found: images/2.png"]),
    ("unreadable_image", None, SPEC, _corrupt_image,
     ["items.parquet", "column 'img'", "row 3", "unreadable image images/3.png"]),
    ("item_id_type_mismatch", _with("interactions", lambda d: d.with_columns(pl.col("iid").cast(pl.String))),
     SPEC, None, ["interactions.parquet", "column 'iid'", "item ids are String here but Int64"]),
    ("null_label", _with("interactions", _set_row("like", 3, None)), SPEC, None,
     ["interactions.parquet", "column 'like'", "row 4", "label must be 0 or 1, found None"]),
    ("null_boolean_label",
     _with("interactions", lambda d: d.with_columns(pl.col("click").cast(pl.Boolean)).pipe(_set_row("click", 5, None))),
     SPEC, None, ["interactions.parquet", "column 'click'", "row 6", "label is null"]),
    ("fractional_timestamp",
     _with("interactions", lambda d: d.with_columns(pl.col("ts").cast(pl.Float64)).pipe(_set_row("ts", 2, 1_700_000_000.5))),
     SPEC, None, ["interactions.parquet", "column 'ts'", "row 3", "timestamp must be whole seconds"]),
    ("wrong_dtype_timestamp", _with("interactions", lambda d: d.with_columns(pl.col("ts") > 0)), SPEC, None,
     ["interactions.parquet", "column 'ts'", "timestamp must be integer seconds, datetime or ISO-8601 string, found Boolean"]),
    ("wrong_dtype_text", _with("items", lambda d: d.with_columns(pl.col("title").str.split(" "))), SPEC, None,
     ["items.parquet", "column 'title'", "text column must be string, found List(String)"]),
    ("wrong_dtype_image", _with("items", lambda d: d.with_columns(pl.col("img").str.len_chars())), SPEC, None,
     ["items.parquet", "column 'img'", "image column must be a string path, found UInt32"]),
    ("spec_missing_section", None, SPEC.split("[items]")[0] + "[users]" + SPEC.split("[users]")[1], None,
     ["dataset.toml", "missing section [items]"]),
    ("spec_missing_key", None, SPEC.replace('user = "uid"\n', ""), None,
     ["dataset.toml", "missing key 'user' in [interactions]"]),
    ("spec_no_labels", None, SPEC.replace('labels = ["click", "like"]', "labels = []"), None,
     ["dataset.toml", "[interactions] needs at least one label"]),
    ("spec_wrong_type", None, SPEC.replace('timestamp = "ts"', "timestamp = 3"), None,
     ["dataset.toml", "'timestamp' in [interactions] must be a string"]),
    ("spec_multi_valued_not_categorical", None,
     SPEC.replace('categorical = ["brand"]', 'categorical = ["brand"]\nmulti_valued = { title = "|" }'), None,
     ["dataset.toml", "multi-valued column 'title' in [items] must also be listed in 'categorical'"]),
]


@pytest.mark.parametrize(("case", "tables", "spec", "mutate", "expected"), CASES, ids=[c[0] for c in CASES])
def test_violation_gives_specific_message_and_exit_2(tmp_path, capsys, case, tables, spec, mutate, expected):
    root = write_dataset(tmp_path / "ds", tables, spec)
    if mutate is not None:
        mutate(root)
    before = sorted(p.name for p in root.rglob("*"))

    with pytest.raises(DataError) as info:
        load_dataset(root)
    message = str(info.value)
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in {message!r}"

    assert main(["data", "check", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert "Traceback" not in err
    assert all(fragment in err for fragment in expected)
    assert sorted(p.name for p in root.rglob("*")) == before, "check must write nothing"


def test_multiple_problems_are_all_reported(tmp_path):
    tables = _with("interactions", lambda d: d.pipe(_set_row("click", 2, 3)).pipe(_set_row("uid", 1, None)))
    root = write_dataset(tmp_path / "ds", tables)
    with pytest.raises(DataError) as info:
        load_dataset(root)
    assert len(info.value.problems) == 2
    assert {p.column for p in info.value.problems} == {"click", "uid"}


def test_missing_media_allowed_becomes_null_image(tmp_path):
    root = write_dataset(tmp_path / "ds")
    (root / "images" / "2.png").unlink()
    with pytest.warns(UserWarning, match="treated as missing"):
        ds = load_dataset(root, allow_missing_media=True)
    images = dict(zip(ds.items["item_id"].to_list(), ds.items["image"].to_list(), strict=True))
    assert images[2] is None and images[8] is None
    assert images[1].endswith("images/1.png")
    assert len(ds.missing_media) == 1


def test_valid_dataset_is_canonical(tmp_path):
    root = write_dataset(tmp_path / "ds")
    ds = load_dataset(root)
    assert ds.interactions.columns == ["row_id", "user_id", "item_id", "ts", "click", "like",
                                       "ctx_device", "item_row"]
    assert ds.items.columns == ["item_row", "item_id", "text", "item_brand", "image"]
    assert ds.users.columns == ["user_id", "user_region"]
    assert ds.interactions["ts"].dtype == pl.Int64
    assert ds.interactions.height == 40
    # item_row indexes the item table.
    joined = ds.interactions.join(ds.items, on="item_row")
    assert (joined["item_id"] == joined["item_id_right"]).all()
    assert ds.fingerprint == load_dataset(root).fingerprint == dataset_fingerprint(root)


def test_csv_tables_and_iso_timestamps_are_accepted(tmp_path):
    tables = _with("interactions", lambda d: d.with_columns(
        pl.from_epoch("ts", time_unit="s").dt.strftime("%Y-%m-%dT%H:%M:%S")))
    root = write_dataset(tmp_path / "ds", tables)
    for name in ("interactions", "items", "users"):
        pl.read_parquet(root / f"{name}.parquet").write_csv(root / f"{name}.csv")
        (root / f"{name}.parquet").unlink()
    ds = load_dataset(root)
    expected = tiny_tables()["interactions"]["ts"]
    assert ds.interactions["ts"].to_list() == expected.to_list()


def test_cli_process_exits_2_without_traceback(tmp_path):
    root = write_dataset(tmp_path / "ds", _with("interactions", _set_row("like", 0, 5)))
    proc = subprocess.run([sys.executable, "-m", "recsys", "data", "check", str(root)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "column 'like', row 1: label must be 0 or 1, found 5" in proc.stderr


def test_boolean_labels_and_datetime_or_date_timestamps_are_accepted(tmp_path):
    base = load_dataset(write_dataset(tmp_path / "base")).interactions
    seconds = tiny_tables()["interactions"]["ts"]
    as_datetime = _with("interactions", lambda d: d.with_columns(
        pl.from_epoch("ts", time_unit="s").cast(pl.Datetime("us")),
        pl.col("click").cast(pl.Boolean), pl.col("like").cast(pl.Boolean)))
    ds = load_dataset(write_dataset(tmp_path / "datetime", as_datetime))
    assert ds.interactions["ts"].dtype == pl.Int64
    assert ds.interactions["ts"].to_list() == seconds.to_list()
    for label in ("click", "like"):  # True/False read as 1/0
        assert ds.interactions[label].to_list() == base[label].to_list()
    as_date = _with("interactions", lambda d: d.with_columns(pl.from_epoch("ts", time_unit="s").dt.date()))
    days = load_dataset(write_dataset(tmp_path / "date", as_date)).interactions["ts"]
    assert days.to_list() == (seconds // 86_400 * 86_400).to_list()  # midnight of each day


def test_fingerprint_changes_with_every_input_and_not_with_the_location(tmp_path):
    """The fingerprint a run records stands for its data: any changed table or spec changes
    it, a copy of the same files elsewhere does not."""
    root = write_dataset(tmp_path / "ds")
    reference = load_dataset(root).fingerprint
    copy = tmp_path / "elsewhere" / "ds"
    copy.parent.mkdir()
    shutil.copytree(root, copy)
    assert load_dataset(copy).fingerprint == dataset_fingerprint(copy) == reference

    changes = {
        "one label": ("interactions", _set_row("click", 0, 1 - tiny_tables()["interactions"]["click"][0])),
        "one title": ("items", _set_row("title", 2, "another title")),
        "one user attribute": ("users", _set_row("region", 1, "n")),
    }
    seen = {reference}
    for what, (table, change) in changes.items():
        changed = write_dataset(tmp_path / what, _with(table, change))
        fingerprint = load_dataset(changed).fingerprint
        assert fingerprint == dataset_fingerprint(changed)
        assert fingerprint not in seen, what
        seen.add(fingerprint)
    renamed = write_dataset(tmp_path / "spec", spec=SPEC.replace('name = "tiny"', 'name = "tiny2"'))
    assert dataset_fingerprint(renamed) not in seen
