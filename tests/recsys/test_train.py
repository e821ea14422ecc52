"""EM3 end-to-end training: learning, CIC, kill-and-resume, two processes, evaluation."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from data.dataset import load_dataset
from data.loader import BatchLoader
from data.prepare import Prepared, prepare
from ranking.config import native_cpu_bf16
from recsys.config import load_train_config
from recsys.model import EM3Model
from recsys.train import build_optimizer, train
from tests.recsys.train_fixtures import REPO, TINY, make_world, recsys_cmd, run_recsys, set_args


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return make_world(tmp_path_factory.mktemp("train"))


@pytest.fixture(scope="module")
def em3_run(world: Path, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("runs") / "em3"
    cfg = load_train_config("em3", [*TINY, f'data.dir="{world}"'])
    metrics = train(cfg, out, preset="em3", progress=False)
    return out, metrics


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


def _content_model(world, *overrides: str) -> tuple[EM3Model, Prepared]:
    """An em3 model over the world's tiny token cache (built here), and the prepared data."""
    from multimodal.token_cache import build_token_cache
    from recsys.content_setup import TokenCache

    cfg = load_train_config("em3", [*TINY, f'data.dir="{world}"', *overrides])
    dataset = load_dataset(world)
    prepared = prepare(dataset, cfg.prepare_config())
    build_token_cache(dataset, vision="tiny", text="tiny", tokens=8, progress=False)
    return EM3Model(prepared.layout, cfg, TokenCache.for_dataset(dataset, tokens=8).tensors), prepared


def test_cic_gives_the_qformer_gradients_and_falls(world):
    torch.manual_seed(0)
    model, prepared = _content_model(world, "cic.weight=1.0")
    batches = list(BatchLoader(prepared, "train", 256, shuffle=True, seed=0))
    out = model(batches[0])
    cic = model.cic(out.target_content, out.target_item_emb, batches[0].target_item_rows)
    cic.backward()
    grads = [p.grad for p in model.content.qformer_parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0

    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    fixed = batches[0]
    losses = []
    for _ in range(80):
        out = model(fixed)
        loss = model.cic(out.target_content, out.target_item_emb, fixed.target_item_rows)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0], losses[::10]


def test_interest_loss_trains_the_target_encoder_and_the_history_adapters(world):
    torch.manual_seed(0)
    model, prepared = _content_model(world)
    batch = next(iter(BatchLoader(prepared, "train", 256, shuffle=True, seed=0)))
    out = model(batch)
    assert out.hist_content is not None and out.hist_content.shape[:2] == batch.hist_mask.shape
    loss, parts = model.loss(out, batch)
    assert parts["interest"] > 0
    model.interest(out.target_content, out.hist_content, batch.hist_mask,
                   batch.labels["click"] > 0.5, batch.user_key).backward()
    groups = model.content_param_groups()
    for name in ("qformer", "adapters"):  # target side: base weights; history side: LoRA
        assert sum(float(p.grad.abs().sum()) for p in groups[name] if p.grad is not None) > 0, name


def test_interest_scale_multiplies_only_the_interest_term(world):
    torch.manual_seed(0)
    model, prepared = _content_model(world)
    batch = next(iter(BatchLoader(prepared, "train", 256, shuffle=True, seed=0)))
    out = model(batch)
    full, parts = model.loss(out, batch)
    off, parts_off = model.loss(out, batch, interest_scale=0.0)
    half, _ = model.loss(out, batch, interest_scale=0.5)
    assert parts_off["interest"] == pytest.approx(parts["interest"])  # reported unscaled
    weight = model.cfg.interest.weight
    assert float(full - off) == pytest.approx(weight * parts["interest"], rel=1e-5)
    assert float(half - off) == pytest.approx(0.5 * weight * parts["interest"], rel=1e-5)


def test_interest_warmup_ramps_over_the_configured_epochs(world, tmp_path):
    from ranking.dist import init_process_group_from_env
    from recsys.train import Trainer

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


def test_id_only_trains_the_unknown_item_vector_and_em3_leaves_it_at_zero(world):
    """The presets' cold-item policy: ``id_only`` hides 10% of the target item IDs behind the
    unknown-item vector (so a training step reaches it), ``em3`` scores cold items from content."""
    em3, prepared = _content_model(world)
    cfg = load_train_config("id_only", [*TINY, f'data.dir="{world}"'])
    id_only = EM3Model(prepared.layout, cfg)
    batch = next(iter(BatchLoader(prepared, "train", 256, shuffle=True, seed=0)))
    grads = {}
    for name, model in (("id_only", id_only), ("em3", em3)):
        torch.manual_seed(0)
        model.train()
        loss, _ = model.loss(model(batch), batch)
        loss.backward()
        unknown = model.ranking.sparse_arch.unknown_item.weight
        assert float(unknown.abs().sum()) == 0.0  # zero-initialised in both
        grads[name] = float(unknown.grad.abs().sum())
    assert grads["id_only"] > 0
    assert grads["em3"] == 0.0


def test_dense_optimizer_is_fused_with_a_learning_rate_per_group(world):
    model, _ = _content_model(world, "optim.qformer_lr=0.004", "optim.adapter_lr=0.003",
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
    sgd, _ = _content_model(world, 'ranking.dense_optimizer="sgd"', "optim.weight_decay=0.01")
    dense = build_optimizer(sgd, sgd.cfg).optimizers[-1][1]._optimizer
    assert isinstance(dense, torch.optim.SGD)
    assert {g["name"]: g["weight_decay"] for g in dense.param_groups} == {
        "ranking": 0.01, "qformer": 0.01, "adapters": 0.01}


@pytest.mark.parametrize(("override", "message"), [
    ("ranking.content_dim=8", "ranking.content_dim is derived from [content]"),
    ("ranking.use_history_content=false", "ranking.use_history_content is derived from content.seq_mode"),
    ("ranking.dense_weight_decay=0.1", "set that instead"),
])
def test_a_ranking_setting_that_train_would_replace_is_refused(override, message):
    from recsys.errors import UsageError

    with pytest.raises(UsageError, match=re.escape(message)):
        load_train_config("em3", [override])


# id_only: on a CPU with native bf16 its dense tower runs under bf16 autocast, with bucketed
# attention positions; the resumed run must still land on the same result. em3 is killed
# partway up its interest warm-up ramp (one epoch), which the resumed run must continue.
# frozen_content: its pooled item vectors are rebuilt from the token cache, not checkpointed.
@pytest.mark.parametrize("preset", ["em3", "id_only", "frozen_content"])
def test_killed_run_resumes_to_the_same_result(world, tmp_path, preset):
    warmup = ["interest.warmup_epochs=1"] if preset == "em3" else []
    args = ["train", preset, "--data", str(world), "--quiet",
            *set_args([*TINY, "train.checkpoint_every=3", *warmup])]
    straight = tmp_path / "straight"
    done = run_recsys(*args, "--out", str(straight))
    assert done.returncode == 0, done.stderr[-2000:]

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
    assert "resumed from step_" in resumed.stdout
    a = json.loads((straight / "metrics.json").read_text())
    b = json.loads((killed / "metrics.json").read_text())
    for label in ("click", "like"):
        for key in ("auc", "gauc", "logloss", "auc_cold_item"):
            assert b["labels"][label][key] == pytest.approx(a["labels"][label][key], abs=1e-6), (label, key)
    hist = (killed / "history.jsonl").read_text().splitlines()
    assert [json.loads(h)["epoch"] for h in hist] == [1, 2]
    bf16 = preset == "id_only" and native_cpu_bf16()
    assert json.loads((killed / "run.json").read_text())["dense_tower_precision"] == \
        ("bf16 autocast (CPU)" if bf16 else "float32")


def test_resume_with_other_settings_is_refused_before_anything_is_touched(world, tmp_path):
    """A resume continues the run that was started: a changed setting that decides what the run
    is (here the dropout, and the prior offset that a run saved before it existed lacks) stops
    it with exit 2 before any data is prepared; epochs, threads and paths may change."""
    from recsys import rundir
    from recsys.config import train_config_toml

    saved = train_config_toml(load_train_config("id_only", TINY))
    run = tmp_path / "run"
    rundir.init_run(run, config_toml=saved.replace("prior_offset = true\n", ""), preset="id_only")
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


def test_evaluate_scores_a_split_with_the_run_vocabularies(em3_run, world, tmp_path):
    run, metrics = em3_run
    out = tmp_path / "eval"
    proc = run_recsys("evaluate", "--run", str(run), "--data", str(world), "--out", str(out),
                      "--no-track", "--quiet")
    assert proc.returncode == 0, proc.stderr[-2000:]
    evaluated = json.loads((out / "metrics.json").read_text())
    assert evaluated["labels"]["click"]["auc"] == pytest.approx(metrics["labels"]["click"]["auc"], abs=1e-6)
    assert (out / "predictions" / "test.parquet").is_file()


@pytest.mark.parametrize(("override", "message"), [
    ("train.epochs=-1", "train.epochs: must be >= 1, got -1"),
    ("content.seq_mode=\"sideways\"", "content.seq_mode: must be one of"),
    ("train.batchsize=3", "train.batchsize: unknown key"),
    ("train.batch_size=\"big\"", "train.batch_size: must be an integer"),
    ("train.compile=\"fast\"", "train.compile: must be one of ['auto', 'on', 'off']"),
])
def test_bad_config_value_is_one_clear_message_and_exit_2(world, tmp_path, override, message):
    proc = run_recsys("train", "em3", "--data", str(world), "--out", str(tmp_path / "r"),
                      "--set", override, timeout=120)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(("override", "message"), [
    ('ranking.table_sharding={movie={sharding_type="table_wise"}}',
     "error: ranking: table_sharding names unknown table 'movie'"),
    ('ranking.table_sharding={item={sharding_type="data_parallel"}}',
     "error: ranking: data_parallel sharding of sequence table 'table_item' fails"),
])
def test_sharding_the_device_cannot_run_is_one_clear_message_and_exit_2(world, tmp_path, override,
                                                                        message):
    # Found only when the model is sharded (it depends on the tables and the device), and still
    # bad input: one message, exit 2, no run directory.
    proc = run_recsys("train", "id_only", "--data", str(world), "--out", str(tmp_path / "r"),
                      "--set", override, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "r").exists()


def test_compile_on_without_a_cpp_compiler_is_one_clear_message_and_exit_2(world, tmp_path):
    # Inductor reads $CXX: with none it cannot build the CPU kernels. "auto" would train eager
    # (tests/recsys/test_perf.py); "on" is a promise the machine cannot keep.
    proc = run_recsys("train", "id_only", "--data", str(world), "--out", str(tmp_path / "r"),
                      "--set", 'train.compile="on"', timeout=120,
                      env={"CXX": "/nonexistent/c++"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert 'error: train.compile = "on" but Inductor found no C++ compiler' in proc.stderr
    assert "Traceback" not in proc.stderr
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


def test_unreachable_tracking_store_loses_nothing_and_syncs_later(world, tmp_path):
    from mlflow import MlflowClient

    from recsys.tracking import TrackingWarning

    out = tmp_path / "run"
    # Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    cfg = load_train_config("id_only", [*TINY, f'data.dir="{world}"', "train.epochs=1",
                                        "tracking.enabled=true", 'tracking.uri="http://127.0.0.1:9"',
                                        'tracking.model_name="ranker"'])
    with pytest.warns(TrackingWarning):
        metrics = train(cfg, out, progress=False)
    assert json.loads((out / "metrics.json").read_text())["labels"] == metrics["labels"]
    assert json.loads((out / "run.json").read_text())["tracking"]["synced"] is False

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = run_recsys("track", "sync", str(out), "--tracking-uri", uri, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    tracking = json.loads((out / "run.json").read_text())["tracking"]
    assert tracking["synced"] is True
    logged = MlflowClient(uri).get_run(tracking["run_id"]).data.metrics
    assert logged["test.labels.click.auc"] == pytest.approx(metrics["labels"]["click"]["auc"])
    assert MlflowClient(uri).get_model_version("ranker", tracking["model_version"]).status == "READY"
