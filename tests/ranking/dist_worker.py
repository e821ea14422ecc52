"""The body of the 2-process gloo test: one spawned process group runs every multi-process
check, since starting a group (and importing TorchRec) is the slow part. Each rank returns
numbers; rank 0 writes them to ``workdir/two_process.pt`` and the test asserts on them."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed._shard.sharded_tensor import ShardedTensor

from ranking.checkpoint import load_checkpoint, save_checkpoint
from ranking.config import RankingConfig
from ranking.model import RankingModel
from ranking.optim import dense_parameters, make_optimizers
from ranking.sharding import init_process_group_from_env, shard_model, table_placements
from ranking.testing.train import predict, train_step
from tests.ranking.fixtures import ContentParent, item_features, toy_world

# Every CPU-capable combination appears once across the two models.
BARE_SHARDING = {
    "user": {"sharding_type": "table_wise"},
    "item_group": {"sharding_type": "column_wise"},
    "ctx_hour": {"sharding_type": "data_parallel"},
    "table_item": {"sharding_type": "table_wise", "compute_kernel": "fused"},
}
PARENT_SHARDING = {
    "item": {"sharding_type": "column_wise"},
    "user": {"sharding_type": "data_parallel"},
    "item_group": {"sharding_type": "table_wise"},
}


def bare_config() -> RankingConfig:
    return RankingConfig(embedding_dim=8, attention_hidden=(16,), over_arch=(32, 16),
                         table_sharding=BARE_SHARDING, dense_lr=1e-2, sparse_lr=0.1)


def parent_config() -> RankingConfig:
    return RankingConfig(embedding_dim=8, attention_hidden=(16,), over_arch=(32,), content_dim=8,
                         dcn_low_rank=4, table_sharding=PARENT_SHARDING)


def eval_batches(rank: int | None = None) -> list:
    """Two halves of one evaluation batch: rank r scores half r; one process scores both."""
    halves = toy_world().batches(64, 32, seed=12)
    return halves if rank is None else [halves[rank]]


def train_batches(rank: int, world_size: int, seed: int) -> list:
    return toy_world().batches(64 * world_size, 32, seed=seed)[rank::world_size]


def table_tensors(model: torch.nn.Module) -> dict[str, list[torch.Tensor]]:
    """Embedding table → copies of this rank's shards (the whole table when replicated)."""
    out = {}
    for key, value in model.state_dict().items():
        if ".embedding_bags." in key or ".embeddings." in key:
            table = key.split(".")[-2]
            if isinstance(value, ShardedTensor):
                out[table] = [s.tensor.detach().clone() for s in value.local_shards()]
            else:
                out[table] = [value.detach().clone()]
    return out


def two_process_job(rank: int, workdir: str) -> None:
    workdir = Path(workdir)
    env = init_process_group_from_env()
    world = toy_world()
    layout = world.layout
    res: dict = {"rank": rank, "world_size": env.world_size}

    # 1. Parent module with content: sharded forward equals the unsharded one, same weights.
    cfg = parent_config()
    torch.manual_seed(0)  # the same reference weights on both ranks
    reference = ContentParent(layout, cfg)
    feats = item_features(layout)
    sharded = shard_model(ContentParent(layout, cfg, device="meta"), cfg, env)
    res["parent_plan"] = table_placements(sharded.plan)
    batch = world.batches(64, 32, seed=11)[rank]
    with torch.no_grad():
        before = sharded(batch, feats).logits["click"]
        sharded.load_state_dict(reference.state_dict())
        want, got = reference(batch, feats), sharded(batch, feats)
    res["diff_before_loading"] = float((before - want.logits["click"]).abs().max())
    res["forward_diff"] = max(
        [float((want.logits[k] - got.logits[k]).abs().max()) for k in want.logits]
        + [float((want.target_item_emb - got.target_item_emb).abs().max())])

    # 2. One training step changes the sharded tables; dense replicas stay identical.
    optimizer = make_optimizers(sharded, cfg)
    tables_before = table_tensors(sharded)
    train_step(sharded, optimizer, batch, item_features=feats)
    tables_after = table_tensors(sharded)
    res["tables_changed"] = {
        t: any(not torch.equal(a, b)
               for a, b in zip(tables_before[t], tables_after[t], strict=True))
        for t in tables_before if tables_before[t] and tables_before[t][0].numel() > 0}
    res["dense_checksum"] = sum(float(p.detach().double().sum())
                                for p in dense_parameters(sharded).values())

    # 3. Checkpoint written by one process, loaded into two (model and optimizer).
    cfg = bare_config()
    model = shard_model(RankingModel(layout, cfg, device="meta"), cfg, env, print_plan=False)
    res["bare_plan"] = table_placements(model.plan)
    optimizer = make_optimizers(model, cfg)
    res["extra_from1"] = load_checkpoint(workdir / "from1", model, optimizer)
    res["pred_from1"] = predict(model, eval_batches(rank))["click"]

    # 4. Train on two processes and save; the test loads this into one process.
    for b in train_batches(rank, env.world_size, seed=13):
        train_step(model, optimizer, b)
    save_checkpoint(workdir / "from2", model, optimizer, {"note": "two"}, step=7)
    res["pred_from2"] = predict(model, eval_batches(rank))["click"]

    # 5. Resume: a fresh model + optimizer from the checkpoint takes the same next step.
    resumed = shard_model(RankingModel(layout, cfg, device="meta"), cfg, env, print_plan=False)
    resumed_opt = make_optimizers(resumed, cfg)
    load_checkpoint(workdir / "from2", resumed, resumed_opt)
    for b in train_batches(rank, env.world_size, seed=14):
        train_step(model, optimizer, b)
        train_step(resumed, resumed_opt, b)
    res["resume_diff"] = float((predict(model, eval_batches(rank))["click"]
                                - predict(resumed, eval_batches(rank))["click"]).abs().max())

    gathered = [None] * env.world_size
    dist.all_gather_object(gathered, res)
    if rank == 0:
        torch.save(gathered, workdir / "two_process.pt")
    dist.destroy_process_group()
