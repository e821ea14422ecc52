"""Training and evaluating from prepared shards: ``recsys data shard`` writes what the library
writes; ``recsys train --data SHARDS`` streams train, resumes a killed run mid-epoch to the
metrics of an uninterrupted one, and ``recsys evaluate --data SHARDS`` scores as the run did;
shards prepared with other settings, and content presets, are refused in one line."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from data.dataset import load_dataset
from data.prepare import prepare
from data.shard_manifest import read_manifest
from data.shards import load_prepared, write_shards
from data.synth import SynthConfig, synthesize
from data.vocab import Vocab
from ranking.config import native_cpu_bf16
from ranking.dist import process_group
from recsys.cli import main
from recsys.config import load_train_config
from recsys.errors import UsageError
from recsys.evaluation.evaluate import evaluate
from recsys.evaluation.predict import score_shards, score_split
from recsys.model.build import build_model
from recsys.training.train import seed_everything
from recsys.training.train_data import open_eval_shards
from tests.recsys.train_fixtures import REPO, recsys_cmd, run_recsys, set_args

pytestmark = pytest.mark.slow

DATA = ["data.max_history=5", "data.tail_days=7"]
SETTINGS = [*DATA, "ranking.embedding_dim=4", "ranking.attention_hidden=[8]",
            "ranking.over_arch=[8]", "train.epochs=2", "train.batch_size=64",
            "train.eval_batch_size=1024", "train.threads=1", "train.compile=off",
            "train.checkpoint_every=1", "tracking.enabled=false",
            # Blocks and buffers far smaller than the split: several chunks per epoch.
            "data.block_rows=128", "data.shuffle_buffer_rows=512"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return synthesize(tmp_path_factory.mktemp("world") / "w",
                      SynthConfig(n_users=120, n_items=80, n_days=24, seed=2))


@pytest.fixture(scope="module")
def shards(world, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards") / "s"
    args = ["data", "shard", str(world), "--out", str(out), "--config", "id_only", "--buckets", "3"]
    assert main([*args, *set_args(DATA)]) == 0
    return out


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_data_shard_writes_the_librarys_shards_and_refuses_bad_input(world, shards, tmp_path, capsys):
    cfg = load_train_config("id_only", DATA)
    same = write_shards(prepare(load_dataset(world), cfg.prepare_config()), tmp_path / "lib", buckets=3)
    assert files(shards) == files(same.root)  # --config and --set map onto the prepare config
    capsys.readouterr()
    for bad, message in ((["--out", str(shards)], "already exists and is not empty"),
                         (["--out", str(tmp_path / "x"), "--buckets", "0"], "--buckets must be >= 1"),
                         (["--out", str(tmp_path / "y"), "--set", "data.max_history=0"],
                          "data.max_history")):
        assert main(["data", "shard", str(world), *bad]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


@pytest.mark.parametrize("item_prior_rate", [True, False])
def test_the_bounded_engine_writes_the_same_split_files(world, tmp_path, item_prior_rate):
    """With the preset's data settings (the item prior rate on) and with it off."""
    extra = [] if item_prior_rate else ["data.item_prior_rate=false"]
    base = ["data", "shard", str(world), "--config", "id_only", "--buckets", "3",
            *set_args([*DATA, *extra])]
    assert main([*base, "--out", str(tmp_path / "memory")]) == 0
    assert main([*base, "--out", str(tmp_path / "bounded"), "--engine", "bounded"]) == 0
    memory, bounded = files(tmp_path / "memory"), files(tmp_path / "bounded")
    manifest = "manifest.json"
    assert {k: v for k, v in memory.items() if k != manifest} == \
        {k: v for k, v in bounded.items() if k != manifest}
    written = json.loads(bounded[manifest])
    assert written["written_by"] == "polars-bounded"
    assert written["prepare"]["item_prior_rate"] is item_prior_rate


def test_other_settings_and_content_presets_are_refused(shards, tmp_path, capsys):
    args = ["train", "id_only", "--data", str(shards), "--out", str(tmp_path / "r"), "--quiet"]
    assert main([*args, *set_args([*SETTINGS, "data.max_history=6"])]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: --data {shards}: the shards were prepared with other settings than the run's "
        "(data.max_history: shards 5, run 6); --set the shards' values or shard the dataset "
        "again with the run's (recsys data shard)"]
    args[1] = "em3"
    assert main([*args, *set_args(SETTINGS)]) == 2
    assert "content.enabled=false" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_evaluating_shards_needs_the_runs_settings_and_vocabularies(shards):
    manifest = read_manifest(shards)
    prep, vocabs = manifest.prepare.to_dict(), manifest.vocabs
    assert open_eval_shards(shards, prep, vocabs).rows("valid") == manifest.rows("valid")
    with pytest.raises(UsageError, match=r"data.max_history: shards 5, run 9"):
        open_eval_shards(shards, {**prep, "max_history": 9}, vocabs)
    other = {**vocabs, "user": Vocab("user", vocabs["user"].values.head(3))}
    with pytest.raises(UsageError, match=r"other vocabularies than the run's \(user\)"):
        open_eval_shards(shards, prep, other)


def test_scoring_shards_a_chunk_at_a_time_gives_the_in_memory_scores(shards):
    cfg = load_train_config("id_only", SETTINGS)
    manifest = read_manifest(shards)
    with process_group() as env:
        seed_everything(0)
        model = build_model(cfg, manifest.layout, None, env)
        # 100-row batches, 200-row chunks: two chunks, the last batch padded with row 0.
        want, _ = score_split(model, load_prepared(shards, ("valid",)), "valid", 100, env.device)
        got, _ = score_shards(model, manifest, "valid", 100, env.device, chunk_rows=250)
    assert manifest.rows("valid") % 100 and want.keys() == got.keys() == {
        "click", "like", "return_7d", "return_14d"}
    assert all(np.array_equal(want[h], got[h]) and len(got[h]) == manifest.rows("valid") for h in want)


def test_killed_run_from_shards_resumes_mid_epoch_to_the_same_result(world, shards, tmp_path,
                                                                     capsys):
    args = ["train", "id_only", "--data", str(shards), "--quiet", *set_args([*SETTINGS, "train.epochs=1"])]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    whole = subprocess.Popen(recsys_cmd(*args, "--out", str(tmp_path / "whole")), cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(recsys_cmd(*args, "--out", str(killed)), cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not list((killed / "checkpoints").glob("step_*[3-9]")) and time.time() < deadline:
        assert proc.poll() is None, "training ended before it could be killed"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "metrics.json").exists()
    # From the dataset directory the batches would differ: refused (in-process, quick).
    assert main([*args[:3], str(world), *args[4:], "--out", str(killed), "--resume"]) == 2
    assert "the run trained from prepared shards" in capsys.readouterr().err
    resumed = run_recsys(*args, "--out", str(killed), "--resume")
    out, err = whole.communicate(timeout=600)
    assert whole.returncode == 0, err[-2000:]
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    batch = int(re.search(r"resumed from step_\d+: epoch \d+, batch (\d+)", resumed.stdout).group(1))
    assert batch > 0  # mid-epoch: the stream resumed with iter_from
    a = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    b = json.loads((killed / "metrics.json").read_text())
    assert a["labels"] == b["labels"] and a["best_epoch"] == b["best_epoch"]
    meta = json.loads((killed / "run.json").read_text())
    # On a CPU with native bf16 the id_only tower ran under bf16 autocast, and resumed exactly.
    assert meta["dense_tower_precision"] == ("bf16 autocast (CPU)" if native_cpu_bf16() else "float32")
    source = load_dataset(world)  # recorded as the run's dataset (tracking, packaging)
    assert meta["dataset"] == {"dir": str(source.root), "fingerprint": source.fingerprint}
    assert meta["prepared_shards"] == str(shards.resolve())

    # recsys evaluate from the shards scores the test split as the run did.
    c = evaluate(killed, shards, tracking=False, progress=False)
    for label, m in b["labels"].items():
        assert c["labels"][label]["auc"] == pytest.approx(m["auc"], abs=1e-6)
        assert c["labels"][label]["rows"] == m["rows"]
