"""Multi-valued categoricals (bags): the contract, validation, vocabularies, KJTs and pooling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from data.dataset import load_dataset
from data.errors import DataError
from data.loader import BatchLoader
from data.prepare import PrepareConfig, index_column, prepare
from data.spec import parse_spec
from ranking.archs import SparseArch
from recsys.cli import main
from tests.data.contract_fixtures import SPEC, tiny_tables, write_dataset

# Items: a List(String) column `tags` and a "|"-separated string `genres`; users: a List(Int64)
# `langs`; interactions: a separated context bag `topics`.
BAG_SPEC = (SPEC
            .replace('categorical = ["brand"]', 'categorical = ["brand", "tags", "genres"]\n'
                     'multi_valued = { genres = "|" }')
            .replace('categorical = ["region"]', 'categorical = ["region", "langs"]')
            .replace('categorical = ["device"]', 'categorical = ["device", "topics"]\n'
                     'multi_valued = { topics = "|" }'))
TAGS = [["x", "y"], [], None, ["z"], ["x"], ["y", "y", "q"], ["x"], []]
GENRES = ["a|b", "", "c", None, "a|", "b", " a | b |c", "c"]


def bag_tables() -> dict[str, pl.DataFrame]:
    t = tiny_tables()
    t["items"] = t["items"].with_columns(pl.Series("tags", TAGS, dtype=pl.List(pl.String)),
                                         pl.Series("genres", GENRES))
    t["users"] = t["users"].with_columns(pl.Series("langs", [[1, 2], [1], [], [3], [2]]))
    n = t["interactions"].height
    t["interactions"] = t["interactions"].with_columns(
        pl.Series("topics", ["u|v", "", "w", None] * (n // 4)))
    return t


@pytest.fixture
def bag_dataset(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "ds", bag_tables(), BAG_SPEC)


def test_both_forms_load_as_string_bags(bag_dataset):
    ds = load_dataset(bag_dataset)
    assert ds.items.schema["item_tags"] == pl.List(pl.String)
    # A null is an empty bag; repeats are kept; empty pieces and blanks around values go.
    assert ds.items["item_tags"].to_list() == [["x", "y"], [], [], ["z"], ["x"], ["y", "y", "q"], ["x"], []]
    assert ds.items["item_genres"].to_list() == [["a", "b"], [], ["c"], [], ["a"], ["b"], ["a", "b", "c"], ["c"]]
    assert ds.users["user_langs"].to_list() == [["1", "2"], ["1"], [], ["3"], ["2"]]
    assert ds.interactions["ctx_topics"].head(4).to_list() == [["u", "v"], [], ["w"], []]
    # A single-valued categorical is unchanged: a string, null as its own value.
    assert ds.items.schema["item_brand"] == pl.String


def test_separator_form_reads_from_csv(bag_dataset):
    for name in ("interactions", "users"):  # the items table keeps a List column: Parquet only
        pl.read_parquet(bag_dataset / f"{name}.parquet").drop(
            "langs" if name == "users" else []).write_csv(bag_dataset / f"{name}.csv")
        (bag_dataset / f"{name}.parquet").unlink()
    spec = BAG_SPEC.replace('categorical = ["region", "langs"]', 'categorical = ["region"]')
    (bag_dataset / "dataset.toml").write_text(spec.replace(".parquet", ".csv").replace(
        'file = "items.csv"', 'file = "items.parquet"'))
    ds = load_dataset(bag_dataset)
    assert ds.interactions["ctx_topics"].head(4).to_list() == [["u", "v"], [], ["w"], []]


def test_vocabulary_is_built_on_train_and_bags_keep_their_lengths(bag_dataset):
    p = prepare(load_dataset(bag_dataset), PrepareConfig(max_history=5, retention=False))
    assert set(p.layout.bags) == {"user_langs", "item_tags", "item_genres", "ctx_topics"}
    assert "item_brand" in p.layout.pooled and "item_brand" not in p.layout.bags
    frame = p.frame
    for feature in p.layout.bags:
        idx = frame[index_column(feature)]
        assert idx.dtype == pl.List(pl.Int64)
        assert (idx.list.len() == frame[feature].list.len()).all()
    train_tags = set(frame.filter(pl.col("split") == "train")["item_tags"].explode().drop_nulls())
    assert set(p.vocabs["item_tags"].values) == train_tags
    # A value never seen in train is OOV (0), one per occurrence; known values are 1..n.
    codes = frame.select(pl.col("item_tags").explode().alias("v"),
                         pl.col(index_column("item_tags")).explode().alias("i")).drop_nulls()
    assert ((codes["i"] == 0) == ~codes["v"].is_in(list(train_tags))).all()


def test_batches_carry_bags_of_zero_one_and_many_values(bag_dataset):
    p = prepare(load_dataset(bag_dataset), PrepareConfig(max_history=5, retention=False))
    loader = BatchLoader(p, "train", batch_size=7, shuffle=True, seed=3)
    frame = p.frame.filter(pl.col("split") == "train")
    seen_lengths: set[int] = set()
    for batch in loader:
        kjt = batch.pooled.to_dict()
        rows = frame.join(pl.DataFrame({"row_id": batch.row_id.numpy()}).with_row_index("pos"),
                          on="row_id").sort("pos")
        for feature in p.layout.pooled:
            jt = kjt[feature]
            expected = rows[index_column(feature)].to_list()
            got = [t.tolist() for t in jt.to_dense()]
            if feature in p.layout.bags:
                assert got == expected
                seen_lengths.update(len(b) for b in expected)
            else:
                assert got == [[v] for v in expected]
    assert {0, 1} <= seen_lengths and max(seen_lengths) > 1


@pytest.mark.parametrize("pooling", ["mean", "sum"])
def test_a_bag_pools_its_rows_and_an_empty_bag_is_zero(bag_dataset, pooling):
    p = prepare(load_dataset(bag_dataset), PrepareConfig(max_history=5, retention=False))
    arch = SparseArch(p.layout, 4, torch.device("cpu"), pooling)
    loader = BatchLoader(p, "train", batch_size=64)
    batch = next(iter(loader))
    pooled, *_ = arch(batch.pooled, batch.sequence)
    slot = list(p.layout.pooled).index("item_tags")
    table = arch.ebc.embedding_bags["table_item_tags"].weight.detach()
    for row, bag in enumerate(batch.pooled.to_dict()["item_tags"].to_dense()):
        rows = table[bag]
        expected = (torch.zeros(4) if len(bag) == 0 else
                    rows.mean(0) if pooling == "mean" else rows.sum(0))
        torch.testing.assert_close(pooled[row, slot], expected)


BAD_BAGS = [
    ("null_inside_list", "items", lambda d: d.with_columns(
        pl.Series("tags", [["x"], ["y", None], [], [], [], [], [], []], dtype=pl.List(pl.String))),
     ["items.parquet", "column 'tags'", "row 2", "null inside a list"]),
    ("float_elements", "items", lambda d: d.with_columns(
        pl.Series("tags", [[1.5]] * 8, dtype=pl.List(pl.Float64))),
     ["items.parquet", "column 'tags'", "lists of strings or integers", "List(Float64)"]),
    ("nested_lists", "users", lambda d: d.with_columns(
        pl.Series("langs", [[[1]], [[2]], [], [], []], dtype=pl.List(pl.List(pl.Int64)))),
     ["users.parquet", "column 'langs'", "lists of strings or integers"]),
    ("separator_on_a_number", "interactions", lambda d: d.with_columns(pl.col("ts").alias("topics")),
     ["interactions.parquet", "column 'topics'", "must be a string column"]),
]


@pytest.mark.parametrize(("case", "table", "mutate", "expected"), BAD_BAGS, ids=[c[0] for c in BAD_BAGS])
def test_a_bad_bag_is_one_clear_error_and_exit_2(tmp_path, capsys, case, table, mutate, expected):
    tables = bag_tables()
    tables[table] = mutate(tables[table])
    root = write_dataset(tmp_path / "ds", tables, BAG_SPEC)
    with pytest.raises(DataError) as info:
        load_dataset(root)
    assert len(info.value.problems) == 1
    assert all(f in str(info.value) for f in expected), str(info.value)
    assert main(["data", "check", str(root)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and all(f in err for f in expected)


@pytest.mark.parametrize(("text", "message"), [
    ('multi_valued = { genre = "|" }', "multi-valued column 'genre' in [items] must also be listed"),
    ('multi_valued = { brand = "" }', "the separator of 'brand' in [items] is empty"),
    ('multi_valued = ["brand"]', "'multi_valued' in [items] must be a table"),
])
def test_a_bad_multi_valued_declaration_is_refused(text, message):
    spec = SPEC.replace('categorical = ["brand"]', f'categorical = ["brand"]\n{text}')
    with pytest.raises(DataError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_spec(spec)


def test_users_missing_from_the_user_table_get_an_empty_bag(tmp_path):
    tables = bag_tables()
    tables["users"] = tables["users"].filter(pl.col("uid") != 2)
    root = write_dataset(tmp_path / "ds", tables, BAG_SPEC)
    p = prepare(load_dataset(root), PrepareConfig(max_history=5, retention=False))
    langs = p.frame.filter(pl.col("user_id") == 2)[index_column("user_langs")]
    assert langs.len() > 0 and (langs.list.len() == 0).all()
    assert np.all(p.frame.filter(pl.col("user_id") == 2)[index_column("user_region")].to_numpy() == 0)


def test_data_check_summarises_each_bag(bag_dataset):
    from data.summary import format_summary, summarize

    summary = summarize(load_dataset(bag_dataset))
    assert summary["bags"]["item_tags"] == {"mean_values": 1.0, "empty_share": 3 / 8, "distinct": 4}
    assert "1.00 values per row, 37.5% empty, 4 distinct" in format_summary(summary).split("bag item_tags")[1]
