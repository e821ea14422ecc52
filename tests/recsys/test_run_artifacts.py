import json

from data.dataset import load_dataset
from data.prepare import PrepareConfig, prepare
from recsys.runs.run_artifacts import DATA_STATE, load_data_state, save_data_state
from tests.recsys.train_fixtures import make_world


def test_data_state_round_trip_and_runs_from_before_the_prior_rate(tmp_path):
    dataset = load_dataset(make_world(tmp_path))
    with_rate = prepare(dataset, PrepareConfig(max_history=5))
    save_data_state(tmp_path / "new", with_rate)
    layout, vocabs, prep = load_data_state(tmp_path / "new")
    assert layout == with_rate.layout and prep["prior_rate"] is True
    assert {"prior_rate", "prior_rows"} <= set(layout.pooled) <= set(vocabs)
    again = prepare(dataset, PrepareConfig(**{**prep, "fractions": tuple(prep["fractions"])}),
                    vocabs=vocabs)
    assert again.layout == layout
    assert again.frame["idx_prior_rate"].equals(with_rate.frame["idx_prior_rate"])

    # A run saved before the features existed has no "prior_rate" key: it was trained without
    # them, and must be re-prepared without them to match its own layout.
    without = prepare(dataset, PrepareConfig(max_history=5, prior_rate=False))
    path = save_data_state(tmp_path / "old", without)
    state = json.loads(path.read_text())
    del state["prepare"]["prior_rate"]
    path.write_text(json.dumps(state))
    assert path.name == DATA_STATE
    layout, vocabs, prep = load_data_state(tmp_path / "old")
    assert prep["prior_rate"] is False
    old = prepare(dataset, PrepareConfig(**{**prep, "fractions": tuple(prep["fractions"])}),
                  vocabs=vocabs)
    assert old.layout == layout and "prior_rate" not in layout.pooled
