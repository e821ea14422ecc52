"""Training configs (recsys/config.py, recsys/config_io.py): presets resolve to their
variants, settings that train derives are refused, bad values are one message and exit 2."""

from __future__ import annotations

import re

import pytest

from recsys.config import load_train_config
from tests.recsys.train_fixtures import run_recsys


@pytest.mark.parametrize(("override", "message"), [
    ("ranking.content_dim=8", "ranking.content_dim is derived from [content]"),
    ("ranking.use_history_content=false", "ranking.use_history_content is derived from content.seq_mode"),
    ("ranking.dense_weight_decay=0.1", "set that instead"),
])
def test_a_ranking_setting_that_train_would_replace_is_refused(override, message):
    from recsys.errors import UsageError

    with pytest.raises(UsageError, match=re.escape(message)):
        load_train_config("em3", [override])


@pytest.mark.parametrize(("override", "message"), [
    ("train.epochs=-1", "train.epochs: must be >= 1, got -1"),
    ("content.seq_mode=\"sideways\"", "content.seq_mode: must be one of"),
    ("train.batchsize=3", "train.batchsize: unknown key"),
    ("train.batch_size=\"big\"", "train.batch_size: must be an integer"),
    ("train.compile=\"fast\"", "train.compile: must be one of ['auto', 'on', 'off']"),
])
def test_bad_config_value_is_one_clear_message_and_exit_2(world, tmp_path, override, message, capsys):
    # In process (the command's exit status and stderr); the first case also as a real process,
    # which must say the same without a traceback.
    from recsys.cli import main

    args = ["train", "em3", "--data", str(world), "--out", str(tmp_path / "r"), "--set", override]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()
    if override == "train.epochs=-1":
        proc = run_recsys(*args, timeout=120)
        assert proc.returncode == 2
        assert message in proc.stderr and "Traceback" not in proc.stderr
        assert not (tmp_path / "r").exists()


def test_ablation_presets_resolve_to_their_variants():
    seq = {p: load_train_config(p).content.seq_mode for p in
           ("em3", "em3_frozen_seq", "em3_full_seq", "em3_no_content_seq", "em3_no_cic",
            "em3_no_interest")}
    assert seq == {"em3": "lora", "em3_frozen_seq": "frozen", "em3_full_seq": "full",
                   "em3_no_content_seq": "none", "em3_no_cic": "lora", "em3_no_interest": "lora"}
    assert load_train_config("em3_no_cic").cic.weight == 0.0
    assert load_train_config("em3_no_cic").uses_interest
    assert not load_train_config("em3_no_interest").uses_interest
    assert load_train_config("em3_no_interest").uses_cic
    # Without history content there is nothing for the interest loss to compare with.
    assert not load_train_config("em3_no_content_seq").uses_interest
    assert not load_train_config("id_only").content.enabled
