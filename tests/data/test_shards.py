"""Prepared shards: the rows of ``prepare`` written per (split, user bucket) and read back the
same, byte-identical on a second write, and a manifest that refuses what it must."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from data.dataset import load_dataset
from data.errors import DataError
from data.prepare import PrepareConfig, Prepared, prepare
from data.shard_manifest import MANIFEST_FILE, SHARD_SCHEMA_VERSION, is_shard_dir, read_manifest
from data.shards import load_prepared, shard_columns, split_frame_to_shard, write_shards
from tests.data.contract_fixtures import write_dataset
from tests.data.test_bags import BAG_SPEC, bag_tables
from tests.data.test_loader import write_dataset as write_string_id_dataset

SPLITS = ("train", "valid", "test")


@pytest.fixture(scope="module")
def string_ids(tmp_path_factory) -> Prepared:
    """String users, two labels, retention, a tail, both prior rates."""
    root = write_string_id_dataset(tmp_path_factory.mktemp("strings"))
    return prepare(load_dataset(root), PrepareConfig(max_history=6, tail_days=3, item_prior_rate=True))


@pytest.fixture(scope="module")
def bags(tmp_path_factory) -> Prepared:
    """Bags of every kind (item, user and context), integer ids."""
    root = write_dataset(tmp_path_factory.mktemp("bags") / "ds", bag_tables(), BAG_SPEC)
    return prepare(load_dataset(root), PrepareConfig(max_history=4))


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", ["string_ids", "bags"])
def test_shards_read_back_as_the_prepared_rows(name, request, tmp_path):
    prepared: Prepared = request.getfixturevalue(name)
    manifest = write_shards(prepared, tmp_path / "shards", buckets=3)
    back = load_prepared(tmp_path / "shards")
    rows = prepared.frame.filter(pl.col("split") != "tail")
    want = split_frame_to_shard(rows, prepared.layout).with_columns(rows["split"])
    assert back.frame.sort("row_id").equals(want.sort("row_id"))
    assert back.layout == prepared.layout and back.config == prepared.config
    assert {k: v.to_dict() for k, v in back.vocabs.items()} == \
        {k: v.to_dict() for k, v in prepared.vocabs.items()}
    assert (back.item_index_by_row() == prepared.item_index_by_row()).all()
    assert back.dataset.fingerprint == prepared.dataset.fingerprint
    # Split order: buckets in order (user_key % 3), each bucket's rows in row_id order.
    for split in SPLITS:
        got = back.frame.filter(pl.col("split") == split)
        assert got["row_id"].to_list() == got.sort(pl.col("user_key") % 3, "row_id")["row_id"].to_list()
        assert manifest.rows(split) == got.height == rows.filter(pl.col("split") == split).height
    assert list(back.frame.columns) == [*shard_columns(prepared.layout, back.frame.schema["user_id"],
                                                       back.frame.schema["item_id"]), "split"]


def test_shard_schema_types(string_ids, bags):
    strings = load_prepared_schema(string_ids)
    assert strings["user_id"] == pl.String and strings["item_id"] == pl.Int64
    assert strings["lt7"] == pl.Int32 and strings["return_7d"] == pl.Int8
    assert strings["prior_item_logit"] == pl.Float32 and "item_genre" not in strings
    bag = load_prepared_schema(bags)
    assert bag["idx_item_tags"] == pl.List(pl.Int64) and bag["idx_item_brand"] == pl.Int64
    assert "return_7d" in bag and "split" not in bag


def load_prepared_schema(prepared: Prepared) -> dict:
    return dict(split_frame_to_shard(prepared.frame, prepared.layout).schema)


def test_a_second_write_gives_the_same_bytes_and_every_bucket_its_file(bags, tmp_path):
    write_shards(bags, tmp_path / "a", buckets=8)  # more buckets than the 5 users
    write_shards(bags, tmp_path / "b", buckets=8)
    a = files(tmp_path / "a")
    assert a == files(tmp_path / "b")
    manifest = read_manifest(tmp_path / "a")
    for split in SPLITS:
        assert [f.path.name for f in manifest.splits[split]] == [f"part-{b:05d}.parquet" for b in range(8)]
        assert 0 in [f.rows for f in manifest.splits[split]]  # empty buckets still have a file
    assert is_shard_dir(tmp_path / "a") and not is_shard_dir(tmp_path)


def test_an_existing_output_is_refused_and_a_failed_write_leaves_nothing(bags, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep")
    with pytest.raises(DataError, match="not an empty directory"):
        write_shards(bags, tmp_path / "full")
    assert files(tmp_path / "full") == {"x": b"keep"}
    broken = Prepared(dataset=bags.dataset, frame=bags.frame.drop("hist_rows"), vocabs=bags.vocabs,
                      layout=bags.layout, config=bags.config)
    with pytest.raises(ValueError, match="hist_rows"):
        write_shards(broken, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"]  # no out, no staging dir
    (tmp_path / "empty").mkdir()
    write_shards(bags, tmp_path / "empty", buckets=2)  # an empty directory is fine
    assert is_shard_dir(tmp_path / "empty")


def edit_manifest(root: Path, change) -> None:
    raw = json.loads((root / MANIFEST_FILE).read_text())
    change(raw)
    (root / MANIFEST_FILE).write_text(json.dumps(raw))


@pytest.mark.parametrize(("change", "message"), [
    (lambda m: m.update(format="other"), "format is 'other'"),
    (lambda m: m.update(schema_version=SHARD_SCHEMA_VERSION + 1),
     f"schema_version {SHARD_SCHEMA_VERSION + 1}: this toolkit reads schema_version 1"),
    (lambda m: m["splits"]["train"]["files"][0].update(path="../../outside.parquet"),
     "outside the dataset directory"),
    (lambda m: m["splits"]["valid"]["files"][1].update(path="/etc/hostname"), "outside"),
    (lambda m: m["splits"]["test"]["files"].pop(), "needs exactly 2 files"),
    (lambda m: m["splits"]["train"].update(rows=1), "is not the sum"),
    (lambda m: m.pop("layout"), "malformed 'layout'"),
    (lambda m: m["prepare"].update(split="random"), "malformed 'prepare'"),
    (lambda m: m.update(buckets=0), "malformed 'buckets'"),
])
def test_a_bad_manifest_is_one_line_naming_it(bags, tmp_path, change, message):
    root = tmp_path / "shards"
    write_shards(bags, root, buckets=2)
    edit_manifest(root, change)
    with pytest.raises(DataError) as err:
        read_manifest(root)
    text = str(err.value)
    assert "\n" not in text and text.startswith(str(root.resolve() / MANIFEST_FILE)), text
    assert message in text, text


def test_not_a_shard_directory(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_manifest(tmp_path / "nope")
    with pytest.raises(DataError, match="not a prepared-shard directory"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        read_manifest(tmp_path)
