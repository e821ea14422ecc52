"""One process, one-rank process group: the path ``recsys train`` takes without torchrun.

Sharded model = plain model (forward and gradients), the fused row-wise Adagrad update is
exact, and checkpoints are atomic, prunable and resumable.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from torch.distributed._shard.sharded_tensor import ShardedTensor

from ranking import sharding
from ranking.checkpoint import (
    CheckpointLoadError,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from ranking.config import ConfigError, RankingConfig
from ranking.loss import multitask_bce
from ranking.model import RankingModel
from ranking.optim import (
    apply_sparse_optimizer,
    dense_optimizer_factory,
    dense_parameters,
    fused_adam_kwargs,
    make_optimizers,
)
from ranking.sharding import make_plan, shard_model, table_placements
from ranking.testing.train import predict, train_step
from tests.ranking.fixtures import toy_world

SHARDING = {"user": {"sharding_type": "data_parallel"},
            "item_group": {"sharding_type": "column_wise"},
            "ctx_hour": {"sharding_type": "data_parallel"},
            "item": {"sharding_type": "table_wise"}}
ITEM_KEY = "sparse_arch.ec.embeddings.table_item.weight"


def config(**kw) -> RankingConfig:
    return RankingConfig(embedding_dim=8, attention_hidden=(16,), over_arch=(16,),
                         table_sharding=SHARDING, sparse_lr=0.1, **kw)


def sharded(env, cfg: RankingConfig | None = None):
    cfg = cfg or config()
    model = shard_model(RankingModel(toy_world().layout, cfg, device="meta"), cfg, env,
                        print_plan=False)
    return model, make_optimizers(model, cfg)


def full_table(value) -> torch.Tensor:
    """A world-of-one ShardedTensor (weights or optimizer state) as one tensor."""
    if not isinstance(value, ShardedTensor):
        return value
    full = torch.empty(value.size())
    for shard in value.local_shards():
        where = tuple(slice(o, o + n) for o, n in
                      zip(shard.metadata.shard_offsets, shard.metadata.shard_sizes, strict=True))
        full[where] = shard.tensor.view(shard.metadata.shard_sizes)
    return full


def test_sharded_model_matches_plain_model_and_fused_update_is_exact(world_of_one, capsys):
    world = toy_world()
    cfg = config()
    torch.manual_seed(0)
    plain = RankingModel(world.layout, cfg)
    model = shard_model(RankingModel(world.layout, cfg, device="meta"), cfg, world_of_one)
    printed = capsys.readouterr().out
    assert "sharding plan:" in printed
    assert all(f"table_{f}" in printed for f in ("user", "item_group", "ctx_hour", "item"))
    model.load_state_dict(plain.state_dict())
    batch = world.batches(64, 64, seed=5)[0]
    want, got = plain(batch), model(batch)
    for head in want.logits:
        torch.testing.assert_close(got.logits[head], want.logits[head], atol=1e-6, rtol=0)

    multitask_bce(want.logits, batch.labels, batch.label_masks)[0].backward()
    item_before = plain.sparse_arch.ec.embeddings["table_item"].weight.detach().clone()
    multitask_bce(got.logits, batch.labels, batch.label_masks)[0].backward()
    # Data-parallel tables are dense parameters with exactly the plain model's gradient.
    dense = dense_parameters(model)
    plain_params = dict(plain.named_parameters())
    for table in ("table_user", "table_ctx_hour"):
        name = f"sparse_arch.ebc.embedding_bags.{table}.weight"
        torch.testing.assert_close(dense[name].grad, plain_params[name].grad)
    assert not any("table_item" in n for n in dense)  # fused tables are not dense
    # The fused table already moved, in backward, by exact row-wise Adagrad.
    g = plain_params[ITEM_KEY].grad
    momentum = g.pow(2).mean(dim=1, keepdim=True)
    want_item = item_before - 0.1 * g / (momentum.sqrt() + cfg.sparse_eps)
    got_item = full_table(model.state_dict()[ITEM_KEY])
    torch.testing.assert_close(got_item, want_item, atol=1e-6, rtol=1e-5)
    touched = g.abs().sum(1) > 0
    assert touched.sum() > 10 and torch.equal(got_item[~touched], item_before[~touched])


def test_world_of_one_keeps_unconstrained_tables_whole_and_honours_constraints(world_of_one,
                                                                             monkeypatch):
    layout = toy_world().layout

    def plan_of(cfg: RankingConfig) -> dict[str, tuple[str, str]]:
        model = RankingModel(layout, cfg, device="meta")
        plan = make_plan(model, cfg, world_of_one, dist.group.WORLD)
        return {t: (p["sharding_type"], p["compute_kernel"])
                for t, p in table_placements(plan).items()}

    bare = RankingConfig(embedding_dim=8)
    ours = plan_of(bare)
    constrained = plan_of(config())
    # The planner left alone (as in a larger world): it splits the item table row-wise.
    free = sharding.planner_constraints
    monkeypatch.setattr(sharding, "planner_constraints",
                        lambda model, cfg, device, world_size: free(model, cfg, device, 2))
    planner = plan_of(bare)
    assert planner["table_item"][0] == "row_wise"
    # Alone, no table is split: the item table is kept whole, table-wise and fused ...
    assert ours["table_item"] == ("table_wise", "fused")
    assert {t for t, _ in ours.values()} <= {"table_wise", "data_parallel"}
    # ... and what the planner keeps data-parallel stays so (it decides the optimizer).
    assert {t for t, p in ours.items() if p[0] == "data_parallel"} == {
        t for t, p in planner.items() if p[0] == "data_parallel"}
    assert constrained["table_user"] == ("data_parallel", "dense")
    assert constrained["table_item_group"] == ("column_wise", "fused")
    assert constrained["table_item"] == ("table_wise", "fused")
    model = RankingModel(layout, bare, device="meta")
    assert free(model, bare, "cpu", world_size=2) == {}


def test_checkpoints_are_atomic_latest_and_pruned(tmp_path, world_of_one):
    model, optimizer = sharded(world_of_one)
    first = save_checkpoint(tmp_path, model, optimizer, {"epoch": 1}, step=3)
    newest = save_checkpoint(tmp_path, model, optimizer, {"epoch": 2}, step=10)
    assert first.name == "step_000000003" and newest.name == "step_000000010"
    assert not any(p.name.startswith(".tmp") for p in tmp_path.iterdir())
    # What a crash leaves behind is never picked: a temp folder, a folder without metadata.
    (tmp_path / ".tmp-step_000000020").mkdir()
    (tmp_path / "step_000000030").mkdir()
    assert latest_checkpoint(tmp_path) == newest
    assert load_checkpoint(tmp_path, model) == {"epoch": 2, "step": 10}  # a run dir → latest
    save_checkpoint(tmp_path, model, optimizer, {"epoch": 3}, step=11, keep_last=2)
    complete = sorted(p.name for p in tmp_path.glob("step_*") if (p / "meta.json").exists())
    assert complete == ["step_000000010", "step_000000011"]
    save_checkpoint(tmp_path, model, optimizer, {"epoch": 4}, step=11)  # same step: replaced
    assert load_checkpoint(latest_checkpoint(tmp_path), model)["epoch"] == 4
    assert latest_checkpoint(tmp_path / "missing") is None


def test_resume_restores_weights_and_optimizer_state(tmp_path, world_of_one):
    world = toy_world()
    torch.manual_seed(2)
    model, optimizer = sharded(world_of_one)
    for batch in world.batches(128, 32, seed=6):
        train_step(model, optimizer, batch)
    rng = torch.get_rng_state()
    path = save_checkpoint(tmp_path, model, optimizer, {"rng": rng}, step=4)
    resumed, resumed_opt = sharded(world_of_one)
    extra = load_checkpoint(path, resumed, resumed_opt)
    assert torch.equal(extra["rng"], rng) and extra["step"] == 4
    state, resumed_state = optimizer.state_dict()["state"], resumed_opt.state_dict()["state"]
    assert set(state) == set(resumed_state)
    assert {k.split(".")[0] for k in state} == {"sparse", "dense"}
    for key, per_param in state.items():
        for name, value in per_param.items():
            torch.testing.assert_close(full_table(resumed_state[key][name]), full_table(value))
    batch = world.batches(32, 32, seed=7)[0]
    train_step(model, optimizer, batch)
    train_step(resumed, resumed_opt, batch)
    torch.testing.assert_close(predict(resumed, [batch]), predict(model, [batch]))


def test_load_refuses_what_it_cannot_restore(tmp_path, world_of_one):
    model, optimizer = sharded(world_of_one)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path, model)
    path = save_checkpoint(tmp_path, model, None, step=1)  # model only
    with pytest.raises(ValueError, match="no optimizer state"):
        load_checkpoint(path, model, optimizer)
    wider = RankingModel(toy_world().layout, RankingConfig(embedding_dim=12))
    with pytest.raises(CheckpointLoadError, match="Size mismatch .*table_user"):
        load_checkpoint(path, wider)


def test_config_mistakes_fail_before_sharding(world_of_one):
    layout = toy_world().layout
    with pytest.raises(ValueError, match="needs CUDA"):
        sharded(world_of_one, config(sparse_optimizer="adam"))
    bad = RankingConfig(embedding_dim=8, table_sharding={"user": {"sharding_type": "row_wise"}})
    with pytest.raises(ValueError, match="pooled table 'table_user' needs CUDA"):
        shard_model(RankingModel(layout, bad, device="meta"), bad, world_of_one)
    replicated = RankingConfig(embedding_dim=8,
                               table_sharding={"item": {"sharding_type": "data_parallel"}})
    with pytest.raises(ConfigError, match="data_parallel sharding of sequence table 'table_item'"):
        shard_model(RankingModel(layout, replicated, device="meta"), replicated, world_of_one)
    unknown = RankingConfig(embedding_dim=8,
                            table_sharding={"movie": {"sharding_type": "table_wise"}})
    with pytest.raises(ValueError, match="unknown table 'movie'"):
        shard_model(RankingModel(layout, unknown, device="meta"), unknown, world_of_one)


def test_sparse_marks_are_applied_once_and_leave_dense_parameters_alone():
    model = RankingModel(toy_world().layout, config())
    assert apply_sparse_optimizer(model, config()) == 4  # three pooled tables + the item table
    assert apply_sparse_optimizer(model, config()) == 0  # a second optimizer would double-step
    assert not [n for n in dense_parameters(model) if "table_" in n]
    assert "heads.heads.head_click.weight" in dense_parameters(model)


def test_dense_adam_is_fused_and_takes_the_reference_step():
    """The dense optimizer uses PyTorch's fused Adam kernel on CPU, and its update equals the
    per-parameter implementation's."""
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(n)) for n in (7, 64, 1)]
    reference = [torch.nn.Parameter(p.detach().clone()) for p in params]
    start = [p.detach().clone() for p in params]
    for name in ("adam", "adamw"):
        fused = dense_optimizer_factory(config(dense_optimizer=name, dense_weight_decay=0.01))(params)
        assert fused.defaults["fused"] is True
        plain_cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        plain = plain_cls(reference, lr=fused.defaults["lr"], weight_decay=0.01)
        for step in range(3):
            for p, r in zip(params, reference, strict=True):
                p.grad = torch.full_like(p, 0.5 * (step + 1)) + p.detach()
                r.grad = torch.full_like(r, 0.5 * (step + 1)) + r.detach()
            fused.step()
            plain.step()
        for p, r in zip(params, reference, strict=True):
            torch.testing.assert_close(p, r, rtol=1e-6, atol=1e-7)
    for p, s in zip(params, start, strict=True):
        assert bool((p.detach() != s).all())  # six steps moved every entry
    assert fused_adam_kwargs([torch.nn.Parameter(torch.zeros(2, device="meta"))]) == {}
    assert fused_adam_kwargs([]) == {}
