"""Two spawned gloo processes: sharded = unsharded forward, training moves sharded tables,
the planner honours constraints, and checkpoints reshard 1 → 2 and 2 → 1 processes."""

from __future__ import annotations

import pytest
import torch

from ranking.checkpoint import load_checkpoint, save_checkpoint
from ranking.model import RankingModel
from ranking.optim import make_optimizers
from ranking.sharding import shard_model, table_placements
from ranking.testing.train import predict, train_step
from tests.ranking.dist_worker import (
    BARE_SHARDING,
    PARENT_SHARDING,
    bare_config,
    eval_batches,
    train_batches,
    two_process_job,
)
from tests.ranking.fixtures import spawn, toy_world

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(tmp_path_factory, world_of_one):
    """One process writes ``from1``; two processes run every check and write ``from2``;
    then one process (sharded, and plain) loads ``from2``."""
    workdir = tmp_path_factory.mktemp("two_process")
    layout = toy_world().layout
    cfg = bare_config()
    torch.manual_seed(1)
    model = shard_model(RankingModel(layout, cfg, device="meta"), cfg, world_of_one,
                        print_plan=False)
    optimizer = make_optimizers(model, cfg)
    for b in train_batches(0, 1, seed=3):
        train_step(model, optimizer, b)
    save_checkpoint(workdir / "from1", model, optimizer, {"note": "one"}, step=3)
    one = {"plan": table_placements(model.plan),
           "pred_from1": predict(model, eval_batches())["click"]}

    spawn(two_process_job, 2, str(workdir))
    ranks = torch.load(workdir / "two_process.pt", weights_only=False)

    reloaded = shard_model(RankingModel(layout, cfg, device="meta"), cfg, world_of_one,
                           print_plan=False)
    reloaded_opt = make_optimizers(reloaded, cfg)
    one["extra_from2"] = load_checkpoint(workdir / "from2", reloaded, reloaded_opt)
    one["pred_from2"] = predict(reloaded, eval_batches())["click"]
    plain = RankingModel(layout, cfg)  # no DMP, no optimizer: the evaluation path
    load_checkpoint(workdir / "from2", plain)
    one["pred_from2_plain"] = predict(plain, eval_batches())["click"]
    return one, ranks


def test_sharded_forward_equals_unsharded_with_same_weights(runs):
    _, ranks = runs
    for r in ranks:
        assert r["world_size"] == 2
        assert r["forward_diff"] <= 1e-5, r
        # The comparison means something: before loading, the weights were different.
        assert r["diff_before_loading"] > 1e-3, r


def test_training_step_changes_every_sharded_table_on_its_owner(runs):
    _, ranks = runs
    owners: dict[str, list[int]] = {}
    for r in ranks:
        for table, changed in r["tables_changed"].items():
            assert changed, (r["rank"], table)
            owners.setdefault(table, []).append(r["rank"])
    assert set(owners) == {"table_item", "table_user", "table_item_group", "table_ctx_hour"}
    assert sorted(owners["table_item"]) == [0, 1]  # column-wise: a shard on each rank
    assert len(owners["table_item_group"]) == 1  # table-wise: one owner
    # DDP keeps the dense replicas (data-parallel tables included) identical.
    assert ranks[0]["dense_checksum"] == pytest.approx(ranks[1]["dense_checksum"], abs=1e-9)


@pytest.mark.parametrize("plan_key,constraints", [("parent_plan", PARENT_SHARDING),
                                                  ("bare_plan", BARE_SHARDING)])
def test_planner_honours_table_constraints(runs, plan_key, constraints):
    _, ranks = runs
    plan = ranks[0][plan_key]
    assert plan == ranks[1][plan_key]
    for key, spec in constraints.items():
        table = key if key.startswith("table_") else f"table_{key}"
        placed = plan[table]
        assert placed["sharding_type"] == spec["sharding_type"], (table, placed)
        want_kernel = "dense" if spec["sharding_type"] == "data_parallel" else "fused"
        assert placed["compute_kernel"] == spec.get("compute_kernel", want_kernel)
        want_ranks = {"table_wise": 1, "column_wise": 2, "data_parallel": 2}[spec["sharding_type"]]
        assert len(set(placed["ranks"])) == want_ranks, (table, placed)
    assert plan["table_item"]["module"].endswith("sparse_arch.ec")
    if plan_key == "parent_plan":  # the tables sit inside the parent's ranker
        assert plan["table_item"]["module"] == "ranker.sparse_arch.ec"


def test_checkpoint_from_one_process_loads_into_two(runs):
    one, ranks = runs
    two = torch.cat([r["pred_from1"] for r in ranks])
    torch.testing.assert_close(two, one["pred_from1"], atol=1e-6, rtol=0)
    assert ranks[0]["extra_from1"] == {"note": "one", "step": 3}


def test_checkpoint_from_two_processes_loads_into_one(runs):
    one, ranks = runs
    two = torch.cat([r["pred_from2"] for r in ranks])
    torch.testing.assert_close(one["pred_from2"], two, atol=1e-6, rtol=0)
    torch.testing.assert_close(one["pred_from2_plain"], two, atol=1e-6, rtol=0)
    assert one["extra_from2"] == {"note": "two", "step": 7}
    # Training between the two checkpoints moved the predictions: the loads are not vacuous.
    assert (one["pred_from2"] - one["pred_from1"]).abs().max() > 1e-3


def test_resumed_run_takes_the_same_next_steps(runs):
    _, ranks = runs
    for r in ranks:
        assert r["resume_diff"] <= 1e-6, r
