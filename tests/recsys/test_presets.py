"""Every shipped preset × the invariants a user relies on (peft's table style): it builds,
trains with finite losses, checkpoints, and an interrupted run resumes to the uninterrupted
run's metrics.

In process, on a small world with the dense tower eager, so the whole table stays cheap; the
real ``kill -9`` of a training process is tests/recsys/test_train.py's job.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from data.synth import SynthConfig, synthesize
from recsys.config import load_train_config
from recsys.config_io import preset_names
from recsys.training import train as train_module
from tests.recsys.train_fixtures import TINY

SMALL = SynthConfig(n_users=120, n_items=80, n_days=30, seed=11)
# Three steps per epoch, a checkpoint every step, two epochs: an interruption at step 4 is
# mid-epoch and must resume from step 3's checkpoint.
LOOP = ["train.epochs=2", "train.max_steps_per_epoch=3", "train.checkpoint_every=1",
        "train.compile=off", "train.patience=5", "train.batch_size=64"]


class Interrupted(Exception):
    """Stands in for the process dying mid-step."""


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return synthesize(tmp_path_factory.mktemp("presets") / "world", SMALL)


def test_the_table_covers_every_shipped_preset():
    assert {"id_only", "em3", "frozen_content"} <= set(preset_names())


@pytest.mark.parametrize("preset", preset_names())
def test_a_preset_trains_checkpoints_and_resumes_exactly(preset, world, tmp_path, monkeypatch):
    cfg = load_train_config(preset, [*TINY, *LOOP, f'data.dir="{world}"'])
    straight = train_module.train(cfg, tmp_path / "straight", preset=preset, progress=False)
    history = [json.loads(line) for line in (tmp_path / "straight" / "history.jsonl").read_text().splitlines()]
    assert len(history) == 2
    assert all(math.isfinite(v) for h in history for v in h["train_parts"].values())

    real_step = train_module.Trainer.train_step

    def dies_at_step_4(self, batch):
        if self.state.step == 4:
            raise Interrupted
        return real_step(self, batch)

    monkeypatch.setattr(train_module.Trainer, "train_step", dies_at_step_4)
    with pytest.raises(Interrupted):
        train_module.train(cfg, tmp_path / "resumed", preset=preset, progress=False)
    monkeypatch.setattr(train_module.Trainer, "train_step", real_step)
    resumed = train_module.train(cfg, tmp_path / "resumed", resume=True, preset=preset, progress=False)

    label = next(iter(straight["labels"]))
    for key in ("auc", "gauc", "logloss"):
        assert resumed["labels"][label][key] == pytest.approx(straight["labels"][label][key], abs=1e-6), key
