"""`recsys demo` (recsys/commands/demo_cmd.py): trains id_only and em3 once, reuses the
finished runs on a second call, retrains them with --fresh.

The demo synthesises its world only when ``DIR/world`` holds none, so a small world written
there first keeps the test to seconds; ``--set`` shrinks the training loop of both presets.
"""

from __future__ import annotations

import json
from pathlib import Path

from mlflow import MlflowClient

from data.synth import SynthConfig, synthesize
from recsys.cli import main
from tests.recsys.train_fixtures import TINY, set_args

WORLD = SynthConfig(n_users=120, n_items=80, n_days=30, seed=11)
# The demo tracks both runs (it selects between them), so tracking stays on.
LOOP = [*[o for o in TINY if not o.startswith("tracking.")], "train.epochs=1",
        "train.max_steps_per_epoch=2", "train.compile=off"]


def _snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` but the token cache (built into the world by the first run)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".cache" not in p.relative_to(root).parts}


def _versions(root: Path) -> list:
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    return sorted(client.search_model_versions("name = 'em3-demo'"), key=lambda v: int(v.version))


def test_demo_trains_once_reuses_finished_runs_and_retrains_with_fresh(tmp_path, capsys):
    root = tmp_path / "demo"
    synthesize(root / "world", WORLD)
    world_files = _snapshot(root / "world")
    argv = ["demo", "--dir", str(root), *set_args(LOOP)]

    assert main(argv) == 0
    first = capsys.readouterr().out
    for preset in ("id_only", "em3"):
        assert f"[{preset}] training into {root / 'runs' / preset}" in first
        assert json.loads((root / "runs" / preset / "run.json").read_text())["status"] == "finished"
    assert "champion for the A/B test: version" in first
    comparison = json.loads((root / "comparison.json").read_text())
    assert [r["model"] for r in comparison["rows"]] == ["id_only", "em3"]
    assert [d["decision"] for d in comparison["selection"]["decisions"]][0] == "initial"
    assert len(_versions(root)) == 2
    runs = _snapshot(root / "runs")

    assert main(argv) == 0  # again: nothing is trained, registered or decided anew
    second = capsys.readouterr().out
    for preset in ("id_only", "em3"):
        assert f"[{preset}] reusing the finished run in {root / 'runs' / preset}" in second
    assert "training into" not in second
    assert _snapshot(root / "runs") == runs
    assert len(_versions(root)) == 2
    again = json.loads((root / "comparison.json").read_text())
    assert again["rows"] == comparison["rows"] and again["selection"]["decisions"] == []

    assert main([*argv, "--fresh"]) == 0  # retrains both, as new versions of the model
    third = capsys.readouterr().out
    for preset in ("id_only", "em3"):
        assert f"[{preset}] training into {root / 'runs' / preset}" in third
        before = json.loads(runs[f"{preset}/run.json"])
        after = json.loads((root / "runs" / preset / "run.json").read_text())
        assert after["tracking"]["run_id"] != before["tracking"]["run_id"]
    assert [str(v.version) for v in _versions(root)] == ["1", "2", "3", "4"]
    assert len(json.loads((root / "comparison.json").read_text())["selection"]["decisions"]) == 2
    assert _snapshot(root / "world") == world_files  # synthesised never, reused every time
