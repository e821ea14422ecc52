"""A tiny synthetic world and tiny training settings shared by the training tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from data.synth import SynthConfig, synthesize

if TYPE_CHECKING:
    from data.prepare import Prepared
    from recsys.model.em3 import EM3Model

REPO = Path(__file__).resolve().parents[2]

# Small enough to train in seconds on one core, big enough to learn: ~14k impressions.
WORLD = SynthConfig(n_users=300, n_items=200, n_days=40, seed=5)

# Tiny model and loop; one thread so results are bit-for-bit repeatable on CPU.
TINY = [
    "data.max_history=10", "data.tail_days=7",
    "content.hidden=16", "content.num_queries=2", "content.tokens=8",
    "ranking.embedding_dim=8", "ranking.attention_hidden=[16]", "ranking.over_arch=[32]",
    "train.epochs=2", "train.batch_size=256", "train.eval_batch_size=1024", "train.threads=1",
    "train.patience=5", "tracking.enabled=false",
]


def make_world(root: Path) -> Path:
    return synthesize(root / "world", WORLD)


def recsys_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "recsys", *args]


def run_recsys(*args: str, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Runs the CLI in a fresh process (what a user runs), from the repository root."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(recsys_cmd(*args), cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=full_env)


def set_args(overrides: list[str]) -> list[str]:
    out: list[str] = []
    for o in overrides:
        out += ["--set", o]
    return out


def content_model(world: Path, *overrides: str) -> tuple[EM3Model, Prepared]:
    """An em3 model over the world's tiny token cache (built here), and the prepared data."""
    from data.dataset import load_dataset
    from data.prepare import prepare
    from multimodal.token_cache import build_token_cache
    from recsys.config import load_train_config
    from recsys.model.content_setup import TokenCache
    from recsys.model.em3 import EM3Model

    cfg = load_train_config("em3", [*TINY, f'data.dir="{world}"', *overrides])
    dataset = load_dataset(world)
    prepared = prepare(dataset, cfg.prepare_config())
    build_token_cache(dataset, vision="tiny", text="tiny", tokens=8, progress=False)
    return EM3Model(prepared.layout, cfg, TokenCache.for_dataset(dataset, tokens=8).tensors), prepared
