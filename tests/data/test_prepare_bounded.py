"""Bounded-memory preparation: the same shard files as the in-memory path, the same errors, and
no step that sees the whole log."""

from __future__ import annotations

import json
from pathlib import Path
from tempfile import TemporaryDirectory

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import data.item_prior_pass as item_prior_pass
import data.prepare_bounded as bounded
from data.dataset import load_dataset
from data.errors import DataError
from data.prepare import PrepareConfig, prepare
from data.prepare_bounded import prepare_to_shards
from data.shards import write_shards
from data.synth import SynthConfig, synthesize
from tests.data.contract_fixtures import write_dataset
from tests.data.test_bags import BAG_SPEC, bag_tables
from tests.data.test_hostile_input import MUTATIONS, corrupt


def _string_id_bag_tables() -> dict[str, pl.DataFrame]:
    """The bag fixture (bags in items, users and context) with string user and item ids."""
    t = bag_tables()
    as_text = {"uid": pl.format("u{}", "uid"), "iid": pl.format("i{}", "iid")}
    return {name: df.with_columns(expr.alias(c) for c, expr in as_text.items() if c in df.columns)
            for name, df in t.items()}


@pytest.fixture(scope="module")
def worlds(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("bounded")
    synth = synthesize(base / "synth", SynthConfig(n_users=60, n_items=80, n_days=20, seed=3))
    contract = write_dataset(base / "contract", _string_id_bag_tables(), BAG_SPEC)
    # The same with CSV interactions and ISO-8601 text timestamps (read in chunks as well).
    csv = write_dataset(base / "csv", _string_id_bag_tables(), BAG_SPEC.replace(
        "interactions.parquet", "interactions.csv"))
    inter = pl.read_parquet(csv / "interactions.parquet").with_columns(
        pl.from_epoch("ts").dt.strftime("%Y-%m-%dT%H:%M:%S").alias("ts"))
    inter.with_columns(pl.col("topics").fill_null("")).write_csv(csv / "interactions.csv")
    (csv / "interactions.parquet").unlink()
    return {"synth": synth, "contract": contract, "csv": csv}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def assert_same_shards(data: Path, out: Path, config: PrepareConfig, buckets: int, **limits) -> None:
    write_shards(prepare(load_dataset(data), config), out / "memory", buckets)
    manifest = prepare_to_shards(data, out / "bounded", config, buckets, progress=False, **limits)
    assert manifest == out / "bounded" / "manifest.json"
    memory, streamed = _files(out / "memory"), _files(out / "bounded")
    assert memory.keys() == streamed.keys()
    assert [f for f in memory if f != "manifest.json" and memory[f] != streamed[f]] == []
    m1, m2 = (json.loads(files.pop("manifest.json")) for files in (memory, streamed))
    assert (m1.pop("written_by"), m2.pop("written_by")) == ("polars", "polars-bounded")
    assert m1 == m2
    assert sum(m1["splits"][s]["rows"] for s in m1["splits"]) > 0


CASES = [  # world, config, buckets, (work partition rows, chunk rows)
    ("synth", PrepareConfig(), 4, (400, 1000)),
    ("synth", PrepareConfig(split="user_time", tail_days=3, min_count=3), 5, (300, 700)),
    ("synth", PrepareConfig(split="leave_last_out", retention=False, max_history=4), 1, (500, 5000)),
    ("synth", PrepareConfig(tail_days=5, prior_rate=False, fractions=(0.6, 0.3, 0.1)), 16, (10**6, 10**6)),
    ("contract", PrepareConfig(), 2, (9, 7)),
    ("contract", PrepareConfig(split="user_time", tail_days=4, min_count=2), 3, (5, 4)),
    ("contract", PrepareConfig(split="leave_last_out", max_history=2), 4, (13, 11)),
    ("contract", PrepareConfig(retention=False, prior_rate=False, tail_days=2), 1, (40, 40)),
    ("csv", PrepareConfig(split="time", tail_days=3), 3, (8, 6)),
    ("csv", PrepareConfig(split="leave_last_out", retention=False), 2, (100, 9)),
    # The item prior rate: a cross-user pass over item partitions (many of each kind here).
    ("synth", PrepareConfig(item_prior_rate=True, tail_days=3), 4, (150, 700)),
    ("synth", PrepareConfig(item_prior_rate=True, split="user_time", prior_rate=False), 7, (90, 400)),
    ("synth", PrepareConfig(item_prior_rate=True, split="leave_last_out", retention=False), 1,
     (10**6, 10**6)),
    ("contract", PrepareConfig(item_prior_rate=True), 2, (4, 7)),
    ("contract", PrepareConfig(item_prior_rate=True, split="user_time", tail_days=4), 3, (3, 5)),
    ("contract", PrepareConfig(item_prior_rate=True, split="leave_last_out", max_history=2), 5,
     (7, 11)),
    ("csv", PrepareConfig(item_prior_rate=True, tail_days=3), 3, (6, 6)),
]


@pytest.mark.parametrize(("world", "config", "buckets", "limits"), CASES)
def test_bounded_shards_are_byte_identical_to_the_in_memory_ones(worlds, tmp_path, world, config,
                                                                 buckets, limits):
    work_rows, chunk_rows = limits
    assert_same_shards(worlds[world], tmp_path, config, buckets, work_rows=work_rows,
                       chunk_rows=chunk_rows)


def test_no_step_holds_the_whole_log(worlds, tmp_path, monkeypatch):
    """Every derived row goes through the per-user functions once, in partitions of about
    ``work_rows`` rows, and through the item prior rate once, in item partitions of about as
    many; the writer sees one output bucket at a time: with 16 buckets and small partitions, no
    frame any step derives or writes holds more than a fraction of the log."""
    total = pl.read_parquet(worlds["synth"] / "interactions.parquet").height
    seen: dict[str, list[int]] = {"add_user_derived": [], "write_split_file": [],
                                  "add_item_prior_rate": []}

    def spy(module, name):
        real = getattr(module, name)

        def call(frame, *args, **kwargs):
            seen[name].append(frame.height)
            return real(frame, *args, **kwargs)
        monkeypatch.setattr(module, name, call)

    for name in ("add_user_derived", "write_split_file"):
        spy(bounded, name)
    spy(item_prior_pass, "add_item_prior_rate")
    prepare_to_shards(worlds["synth"], tmp_path / "s", PrepareConfig(item_prior_rate=True),
                      buckets=16, progress=False, work_rows=total // 20, chunk_rows=total // 10)
    partitions, written = seen["add_user_derived"], seen["write_split_file"]
    assert sum(partitions) == total and len(partitions) >= 15  # every row, once; many partitions
    assert max(partitions) < total / 6
    item_parts = seen["add_item_prior_rate"]
    assert sum(item_parts) == total and len(item_parts) >= 15
    assert max(item_parts) < total / 6
    # One (split, bucket) file at a time, and items.parquet.
    assert len(written) == 3 * 16 + 1 and max(written) < total / 4


def _error(call) -> str | None:
    try:
        call()
    except DataError as err:
        return str(err)
    return None


@pytest.mark.parametrize("edit", [
    lambda t: t["interactions"].with_columns(like=pl.int_range(pl.len()) % 3),  # 2 from row 3
    lambda t: t["interactions"].with_columns(  # a null user late, a bad label later still
        uid=pl.when(pl.int_range(pl.len()) == 33).then(None).otherwise("uid"),
        click=pl.when(pl.int_range(pl.len()) == 38).then(7).otherwise("click")),
    lambda t: t["interactions"].with_columns(  # an unknown item in the last chunk
        iid=pl.when(pl.int_range(pl.len()) == 37).then(99).otherwise("iid")),
    lambda t: t["interactions"].with_columns(  # a value too large, then a null, in the ts column
        ts=pl.when(pl.int_range(pl.len()) == 5).then(pl.lit(2**63, pl.UInt64))
        .when(pl.int_range(pl.len()) == 30).then(None).otherwise(pl.col("ts").cast(pl.UInt64))),
    lambda t: t["interactions"].drop("like"),
    lambda t: t["interactions"].head(0),
])
def test_bad_interactions_give_the_loaders_error(tmp_path, edit):
    from tests.data.contract_fixtures import tiny_tables

    tables = tiny_tables()
    tables["interactions"] = edit(tables)
    root = write_dataset(tmp_path / "ds", tables)
    expected = _error(lambda: load_dataset(root))
    assert expected is not None
    got = _error(lambda: prepare_to_shards(root, tmp_path / "out", progress=False, chunk_rows=8))
    assert got == expected
    assert not (tmp_path / "out").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mutations=st.lists(MUTATIONS, min_size=1, max_size=3), chunk_rows=st.integers(1, 50))
def test_corrupted_datasets_fail_alike_or_give_the_same_shards(mutations, chunk_rows):
    with TemporaryDirectory() as tmp:
        root = Path(tmp).resolve() / "ds"
        (root.parent / "outside.png").write_bytes(b"not an image")
        corrupt(root, mutations)
        config = PrepareConfig(max_history=3)
        memory = _error(lambda: write_shards(prepare(load_dataset(root), config), Path(tmp) / "m", 2))
        streamed = _error(lambda: prepare_to_shards(root, Path(tmp) / "b", config, 2, progress=False,
                                                    work_rows=10, chunk_rows=chunk_rows))
        assert streamed == memory
        if memory is None:
            assert _files(Path(tmp) / "m").keys() == _files(Path(tmp) / "b").keys()
