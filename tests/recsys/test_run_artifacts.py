import json

from data.dataset import load_dataset
from data.prepare import PrepareConfig, prepare
from recsys.run_artifacts import DATA_STATE, load_data_state, save_data_state
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


def test_a_run_config_from_before_the_prior_offset_loads_without_it(tmp_path):
    from recsys.config import load_run_config, load_train_config, train_config_toml

    saved = train_config_toml(load_train_config("em3"))
    assert "prior_offset = true" in saved  # today's default, written out with every run
    new = tmp_path / "new.toml"
    new.write_text(saved)
    assert load_run_config(new).ranking.prior_offset is True
    # A config.toml saved before the setting existed has no key: that run trained without it.
    old = tmp_path / "old.toml"
    old.write_text(saved.replace("prior_offset = true\n", ""))
    assert load_run_config(old).ranking.prior_offset is False
    assert load_train_config(old).ranking.prior_offset is True  # a plain config: the default
    # Likewise the item prior rate.
    assert "item_prior_rate = true" in saved
    old.write_text(saved.replace("item_prior_rate = true\n", ""))
    assert load_run_config(old).data.item_prior_rate is False
    assert load_run_config(new).data.item_prior_rate is True
    old.write_text(saved.replace("detach_history_ids = true\n", ""))
    assert load_run_config(old).ranking.detach_history_ids is False
