"""What a run keeps of its data pipeline so that evaluation encodes ids exactly as training did.

``data_state.json`` holds the vocabularies (train-split ids → embedding rows) and the feature
layout. Evaluating on a newer log with the same run therefore maps a new id to OOV instead of
silently shifting every index.
"""

from __future__ import annotations

import json
from pathlib import Path

from data.batch import FeatureLayout
from data.prepare import Prepared
from data.vocab import Vocab
from recsys.runs.rundir import atomic_write_text

DATA_STATE = "data_state.json"


def save_data_state(run_dir: str | Path, prepared: Prepared) -> Path:
    state = {"layout": prepared.layout.to_dict(),
             "prepare": prepared.config.to_dict(),
             "vocabs": {name: v.to_dict() for name, v in prepared.vocabs.items()}}
    return atomic_write_text(Path(run_dir) / DATA_STATE, json.dumps(state) + "\n")


def load_data_state(run_dir: str | Path) -> tuple[FeatureLayout, dict[str, Vocab], dict]:
    """(layout, vocabularies, prepare config dict) saved by training."""
    path = Path(run_dir) / DATA_STATE
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} has no {DATA_STATE}; was it written by `recsys train`?")
    state = json.loads(path.read_text())
    vocabs = {name: Vocab.from_dict(d) for name, d in state["vocabs"].items()}
    # Runs saved before the prior-rate features existed were trained without them.
    prep = {"prior_rate": False, **state["prepare"]}
    return FeatureLayout.from_dict(state["layout"]), vocabs, prep
