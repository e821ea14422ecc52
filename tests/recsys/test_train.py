"""The training loop (recsys/training/train.py): em3 learns and writes a complete run, the interest
warm-up, the optimizer groups, kill-and-resume, refused resumes, two processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import numpy as np
import polars as pl
import pytest
import torch

from recsys.config import load_train_config
from recsys.training.optim import build_optimizer
from tests.recsys.train_fixtures import REPO, TINY, content_model, recsys_cmd, run_recsys, set_args


def test_em3_learns_and_writes_a_complete_run(em3_run):
    out, metrics = em3_run
    click = metrics["labels"]["click"]
    assert click["auc"] > 0.6, click
    assert click["gauc"] is not None and click["auc_cold_item"] is not None
    assert metrics["retention"]["return_7d"]["rows"] > 0
    assert metrics["retention"]["return_7d"]["auc"] is not None
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["labels"]["click"]["auc"] == pytest.approx(click["auc"])
    assert on_disk["throughput"]["train_samples_per_s"] > 0
    assert 0 < on_disk["throughput"]["mfu"] < 1
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2]
    # The contrastive loss is part of the objective and falls as training aligns content and IDs.
    assert history[1]["train_parts"]["cic"] < history[0]["train_parts"]["cic"]
    assert all(0 < h["train_parts"]["interest"] < 10 for h in history)
    assert history[1]["train_loss"] < history[0]["train_loss"]
    assert (out / "predictions" / "test.parquet").is_file()
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "finished"
    assert meta["dense_tower_precision"] == "float32"  # a model with content: float32


def test_interest_warmup_ramps_over_the_configured_epochs(world, tmp_path):
    from ranking.dist import init_process_group_from_env
    from recsys.training.train import Trainer

    env = init_process_group_from_env()
    cfg = load_train_config("em3", [*TINY, f'data.dir="{world}"', "interest.warmup_epochs=1.5",
                                    "train.compile=off"])
    trainer = Trainer(cfg, tmp_path / "warm", env, progress=False)
    steps = trainer.steps_per_epoch
    assert steps == len(trainer.loader) > 2
    warm = round(1.5 * steps)
    assert trainer.interest_warmup_steps == warm
    assert trainer.interest_scale(0) == pytest.approx(1 / warm)
    assert trainer.interest_scale(warm // 2 - 1) == pytest.approx((warm // 2) / warm)
    assert trainer.interest_scale(warm - 1) == 1.0 and trainer.interest_scale(10 * warm) == 1.0
    # Off: full weight from the first step; without the interest loss there is no ramp.
    cfg_off = load_train_config("em3", [*TINY, f'data.dir="{world}"', "interest.warmup_epochs=0",
                                        "train.compile=off"])
    assert Trainer(cfg_off, tmp_path / "off", env, progress=False).interest_scale(0) == 1.0
    cfg_id = load_train_config("id_only", [*TINY, f'data.dir="{world}"', "train.compile=off"])
    assert Trainer(cfg_id, tmp_path / "id", env, progress=False).interest_warmup_steps == 0


def test_dense_optimizer_is_fused_with_a_learning_rate_per_group(world):
    model, _ = content_model(world, "optim.qformer_lr=0.004", "optim.adapter_lr=0.003",
                              "ranking.dense_lr=0.002")
    dense = build_optimizer(model, model.cfg).optimizers[-1][1]._optimizer
    assert isinstance(dense, torch.optim.AdamW) and dense.defaults["fused"] is True  # the default
    lrs = {g["name"]: g["lr"] for g in dense.param_groups}
    assert lrs == {"ranking": 0.002, "qformer": 0.004, "adapters": 0.003}
    groups = model.content_param_groups()
    by_name = {g["name"]: {id(p) for p in g["params"]} for g in dense.param_groups}
    assert by_name["adapters"] == {id(p) for p in groups["adapters"]}
    assert by_name["qformer"] == {id(p) for p in groups["qformer"]}
    plain = build_optimizer(model, model.cfg, fused=False).optimizers[-1][1]._optimizer
    assert not plain.defaults["fused"]
    # ranking.dense_optimizer and optim.weight_decay take effect on every group.
    sgd, _ = content_model(world, 'ranking.dense_optimizer="sgd"', "optim.weight_decay=0.01")
    dense = build_optimizer(sgd, sgd.cfg).optimizers[-1][1]._optimizer
    assert isinstance(dense, torch.optim.SGD)
    assert {g["name"]: g["weight_decay"] for g in dense.param_groups} == {
        "ranking": 0.01, "qformer": 0.01, "adapters": 0.01}


# em3 is killed partway up its interest warm-up ramp (one epoch), which the resumed run must
# continue. frozen_content: its pooled item vectors are rebuilt from the token cache, not
# checkpointed. id_only (a bf16 dense tower on a CPU with native bf16) is killed and resumed
# from prepared shards in test_train_shards.py and under torchrun in test_two_process_resume.py.
@pytest.mark.parametrize("preset", ["em3", "frozen_content"])
def test_killed_run_resumes_to_the_same_result(world, tmp_path, preset):
    warmup = ["interest.warmup_epochs=1"] if preset == "em3" else []
    args = ["train", preset, "--data", str(world), "--quiet",
            *set_args([*TINY, "train.checkpoint_every=3", *warmup])]
    straight = tmp_path / "straight"
    # The uninterrupted run trains beside the killed one (one thread each): the test's wall
    # time is then about one run plus the resume, not two runs.
    uninterrupted = subprocess.Popen(recsys_cmd(*args, "--out", str(straight)), cwd=REPO,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(recsys_cmd(*args, "--out", str(killed)), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    # Kill once a mid-epoch checkpoint exists (step 6 of ~30 per epoch).
    while not list((killed / "checkpoints").glob("step_*[6-9]")) and time.time() < deadline:
        assert proc.poll() is None, "training ended before it could be killed"
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "metrics.json").exists()

    resumed = run_recsys(*args, "--out", str(killed), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    _, err = uninterrupted.communicate(timeout=600)
    assert uninterrupted.returncode == 0, err[-2000:]
    assert "resumed from step_" in resumed.stdout
    a = json.loads((straight / "metrics.json").read_text())
    b = json.loads((killed / "metrics.json").read_text())
    for label in ("click", "like"):
        for key in ("auc", "gauc", "logloss", "auc_cold_item"):
            assert b["labels"][label][key] == pytest.approx(a["labels"][label][key], abs=1e-6), (label, key)
    hist = (killed / "history.jsonl").read_text().splitlines()
    assert [json.loads(h)["epoch"] for h in hist] == [1, 2]
    assert json.loads((killed / "run.json").read_text())["dense_tower_precision"] == "float32"


def test_resume_with_other_settings_is_refused_before_anything_is_touched(world, tmp_path):
    """A resume continues the run that was started: a changed setting that decides what the run
    is (here the dropout, and the prior offset that a run saved before it existed lacks) stops
    it with exit 2 before any data is prepared; epochs, threads and paths may change."""
    from recsys.config import train_config_toml
    from recsys.runs import rundir

    saved = train_config_toml(load_train_config("id_only", TINY))
    run = tmp_path / "run"
    # Saved before the prior offset (and before config schemas): no `schema`, no prior_offset.
    assert saved.startswith("schema = 2\n")
    old_run = saved.removeprefix("schema = 2\n").replace("prior_offset = true\n", "")
    rundir.init_run(run, config_toml=old_run, preset="id_only")
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    args = ["train", "id_only", "--data", str(world), "--out", str(run), "--quiet", "--resume",
            *set_args([*TINY, "train.epochs=3", "ranking.dropout=0.3"])]
    refused = run_recsys(*args)
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "ranking.dropout: run 0.0, given 0.3" in refused.stderr
    assert "ranking.prior_offset: run False, given True" in refused.stderr
    assert "epochs" not in refused.stderr and "threads" not in refused.stderr
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


@pytest.mark.slow
def test_two_process_torchrun_training_writes_metrics(world, tmp_path):
    out = tmp_path / "dist"
    cmd = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "recsys",
           "train", "em3", "--data", str(world), "--out", str(out), "--quiet",
           # 2 ranks x 128 rows = the global batch of the one-process runs above.
           *set_args([*TINY, "train.batch_size=128"])]
    import sys

    proc = subprocess.run([sys.executable, *cmd], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    test_rows = metrics["rows"]
    assert test_rows > 1000  # every test row scored once, none lost to the rank split
    assert metrics["labels"]["click"]["auc"] > 0.6
    # Both ranks wrote their shards of each checkpoint.
    step = sorted((out / "checkpoints").glob("step_*"))[-1]
    assert json.loads((step / "meta.json").read_text())["world_size"] == 2
    # Row by row, the two ranks' test scores are what one process scores with the same best
    # checkpoint: a score gathered onto another row would not be.
    from recsys.evaluation.evaluate import evaluate

    one = evaluate(out, world, out=tmp_path / "one-process", tracking=False, progress=False)
    assert one["rows"] == test_rows
    two = pl.read_parquet(out / "predictions" / "test.parquet").sort("row_id")
    single = pl.read_parquet(tmp_path / "one-process" / "predictions" / "test.parquet").sort("row_id")
    assert two["row_id"].equals(single["row_id"]) and two["row_id"].n_unique() == test_rows
    assert two["click"].equals(single["click"])
    for head in ("pred_click", "pred_like", "pred_return_7d"):
        np.testing.assert_allclose(two[head].to_numpy(), single[head].to_numpy(), rtol=0,
                                   atol=1e-5, err_msg=head)
