"""The config schema version: runs saved before a setting existed load as they trained."""

import pytest

from recsys.config import (
    _MIGRATIONS,
    CONFIG_SCHEMA,
    load_run_config,
    load_train_config,
    train_config_toml,
)
from recsys.errors import UsageError


def _unversioned(text: str) -> str:
    """A config.toml as runs wrote it before the schema key existed."""
    assert text.startswith(f"schema = {CONFIG_SCHEMA}\n")
    return text.split("\n", 1)[1]


def test_every_run_config_is_written_with_the_schema_and_round_trips(tmp_path):
    cfg = load_train_config("em3", ["train.epochs=7", "data.item_prior_rate=false"])
    path = tmp_path / "config.toml"
    path.write_text(train_config_toml(cfg))
    assert path.read_text().startswith(f"schema = {CONFIG_SCHEMA}\n")
    assert load_run_config(path) == cfg
    assert load_train_config(path) == cfg  # a run's config also serves as a preset


@pytest.mark.parametrize("section, key", [("ranking", "prior_offset"),
                                          ("data", "item_prior_rate"),
                                          ("ranking", "detach_history_ids")])
def test_a_schema_1_run_lacking_a_later_setting_loads_as_it_trained(tmp_path, section, key):
    saved = _unversioned(train_config_toml(load_train_config("em3")))
    assert f"{key} = true\n" in saved  # today's default, written out with every run
    old = tmp_path / "old.toml"
    old.write_text(saved.replace(f"{key} = true\n", ""))
    # The run trained before the setting existed: without it, whatever today's default says.
    assert getattr(getattr(load_run_config(old), section), key) is False
    # A config a user wrote is not a saved run: its missing settings take today's defaults.
    assert getattr(getattr(load_train_config(old), section), key) is True
    # A schema 1 run that does have the key keeps its value.
    kept = tmp_path / "kept.toml"
    kept.write_text(saved)
    assert getattr(getattr(load_run_config(kept), section), key) is True


def test_a_current_run_lacking_a_setting_takes_the_default_not_the_migration(tmp_path):
    saved = train_config_toml(load_train_config("em3"))
    path = tmp_path / "config.toml"
    path.write_text(saved.replace("item_prior_rate = true\n", ""))
    assert load_run_config(path).data.item_prior_rate is True


@pytest.mark.parametrize("value, says", [("99", "newer recsys"), ('"2"', "positive integer"),
                                         ("0", "positive integer"), ("true", "positive integer")])
def test_a_bad_or_newer_schema_is_refused(tmp_path, value, says):
    path = tmp_path / "config.toml"
    path.write_text(f"schema = {value}\n" + _unversioned(train_config_toml(load_train_config("em3"))))
    for load in (load_run_config, load_train_config):
        with pytest.raises(UsageError, match=says) as err:
            load(path)
        assert str(path) in str(err.value)


def test_every_older_schema_has_a_migration_step():
    assert sorted(_MIGRATIONS) == list(range(1, CONFIG_SCHEMA))
