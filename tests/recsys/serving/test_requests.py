"""Requests to a served model: what unknown users and items, a missing state and bad rows get
(docs/serving.md, "Requests")."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pytest

from data.errors import DataError
from recsys.serving.mlflow_model import ensure_mlflow_model, package_dir
from recsys.serving.served import ServedModel
from tests.recsys.serving.conftest import Registry


@pytest.fixture(scope="module")
def served(registry: Registry):
    model = ServedModel.load(package_dir(ensure_mlflow_model(registry.runs["em3"])))
    yield model
    model.close()


def _row(served: ServedModel, **values) -> dict:
    """A request row of a user and an item of the snapshot, with ``values`` replacing fields."""
    users, items = served.package.users, served.package.catalogue.items
    user = users.filter(pl.col("rows") > 5).row(0, named=True)
    row = {"user_id": user["user_id"], "item_id": items["item_id"][3], "timestamp": 1_800_000_000,
           "device": "mobile"}
    return {**row, **values}


def _scores(served: ServedModel, rows: list[dict]) -> np.ndarray:
    return served.predict(pd.DataFrame(rows)).to_numpy()


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to float32 rounding (rows at other positions of a batch may differ in the last
    bits)."""
    return bool(np.allclose(a, b, rtol=0, atol=1e-6))


def test_unknown_users_and_items_read_the_oov_rows(served):
    known = _row(served)
    new_users = _scores(served, [{**known, "user_id": 10**9}, {**known, "user_id": 10**9 + 1}])
    # Two users the model never saw, nothing else sent: the same OOV user, the same empty state.
    assert _same(new_users[0], new_users[1])
    assert not _same(new_users[0], _scores(served, [known])[0])
    # Two items outside the catalogue: the unknown-item vector, no content, OOV side features.
    new_items = _scores(served, [{**known, "item_id": 10**9}, {**known, "item_id": 10**9 + 7}])
    assert _same(new_items[0], new_items[1]) and np.isfinite(new_items).all()
    # A history may name items outside the catalogue too.
    assert np.isfinite(_scores(served, [{**known, "history": [10**9, 1, 2]}])).all()


def test_state_left_out_comes_from_the_snapshot(served):
    """A row without history and counts scores as the row that sends the snapshot's own."""
    row = _row(served)
    user = served.package.users.filter(pl.col("user_id") == row["user_id"]).row(0, named=True)
    item = served.package.catalogue.items.filter(pl.col("item_id") == row["item_id"]).row(0, named=True)
    explicit = {**row, "history": list(user["history"]),
                "user_prior": {"rows": user["rows"], "positives": user["positives"]},
                "item_prior": {"rows": item["rows"], "positives": item["positives"]}}
    mixed = [explicit, {**row, "history": None, "user_prior": None, "item_prior": None}]
    scores = _scores(served, mixed)
    assert _same(scores[0], scores[1])
    # Sending another state changes the score: the request's own values are used.
    other = _scores(served, [{**explicit, "history": [], "user_prior": {"rows": 40, "positives": 0}}])
    assert not _same(other[0], scores[0])


@pytest.mark.parametrize(("change", "column", "row", "message"), [
    ({"user_id": None}, "user_id", 2, "null id"),
    ({"user_id": "u-17"}, "user_id", 2, "is a string, the rows before hold numbers"),
    ({"timestamp": 1_800_000_000.5}, "timestamp", 2, "whole seconds"),
    ({"history": [1, None]}, "history", 2, "null inside a history list"),
    ({"user_prior": {"rows": 2, "positives": 5}}, "user_prior", 2, "exceed rows"),
    ({"item_prior": {"rows": 2}}, "item_prior", 2, "give both rows and positives"),
    ({"item_prior": {"rows": -1, "positives": 0}}, "item_prior", 2, "whole number >= 0"),
    ({"user_prior": {"rows": 1, "positives": 0, "views": 3}}, "user_prior", None, "unknown field"),
])
def test_a_bad_request_names_its_column_and_row(served, change, column, row, message):
    rows = [_row(served), _row(served, **change), _row(served)]
    with pytest.raises(DataError) as caught:
        served.predict(pd.DataFrame(rows), source="request")
    (problem,) = caught.value.problems
    assert (problem.column, problem.row) == (column, row) and message in problem.message, problem


def test_a_request_without_a_required_column_is_refused(served):
    row = _row(served)
    del row["device"]
    with pytest.raises(DataError, match="column 'device': missing column"):
        served.predict(pd.DataFrame([row]))
