"""em3's content path earns its place: on one tiny world, em3 beats id_only trained the same way.

A constant threshold (click AUC > 0.6) cannot tell a working content path from a broken one:
id_only alone passes it. So both presets train on the same small world, with the same loop
(TINY, two epochs, float32 towers so no CPU's bf16 decides anything), and em3 must score the
test split better. The world is the synthetic one with its content made to matter: topics
drive clicks more than the hidden quality (which only item IDs can learn), half the items are
cold, six topics. Measured (2 cores): em3 0.623 test AUC, id_only 0.605, and em3 trained on
constant content vectors (a content path that carries nothing) 0.606.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from data.synth import SynthConfig, synthesize
from recsys.config import load_train_config
from recsys.training.train import train
from tests.recsys.train_fixtures import TINY

CONTENT_WORLD = SynthConfig(n_users=200, n_items=400, n_days=30, seed=5, cold_item_share=0.5,
                            topic_weight=2.0, quality_weight=0.3, n_topics=6, image_size=16)


@pytest.fixture(scope="module")
def content_world(tmp_path_factory) -> Path:
    return synthesize(tmp_path_factory.mktemp("content") / "world", CONTENT_WORLD)


def test_em3_beats_id_only_trained_on_the_same_world(content_world, tmp_path):
    metrics = {}
    for preset in ("id_only", "em3"):
        cfg = load_train_config(preset, [*TINY, f'data.dir="{content_world}"',
                                         'ranking.cpu_precision="fp32"'])
        metrics[preset] = train(cfg, tmp_path / preset, preset=preset, progress=False)
    em3, id_only = (metrics[p]["labels"]["click"] for p in ("em3", "id_only"))
    assert em3["auc"] > id_only["auc"] + 0.01, (em3["auc"], id_only["auc"])
    assert em3["auc_cold_item"] > id_only["auc_cold_item"], (em3, id_only)
