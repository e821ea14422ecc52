"""Sharding: planner constraints from config, ``DistributedModelParallel``, the printed plan.

Typical use, identical under ``torchrun --nproc_per_node=N`` and in one plain process::

    env = init_process_group_from_env()
    model = RankingModel(layout, config, device="meta")   # or a parent module holding it
    dmp = shard_model(model, config, env)                  # fused sparse optimizer applied
    optimizer = make_optimizers(dmp, config)                # sparse (fused) + dense
    out = dmp(batch.to(env.device)); loss.backward(); optimizer.step(); optimizer.zero_grad()

The TorchRec modules may sit anywhere inside ``model``: the planner and DMP walk the module
tree, so the EM3 model (Q-Former + ranking model) is sharded as a whole.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn
from torchrec.distributed.model_parallel import (
    DefaultDataParallelWrapper,
    DistributedModelParallel,
)
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints
from torchrec.distributed.planner.storage_reservations import FixedPercentageStorageReservation
from torchrec.distributed.planner.types import KernelConfig, TopologyFactory, TrainerConfig
from torchrec.distributed.sharding_plan import get_default_sharders
from torchrec.distributed.types import ShardingEnv, ShardingPlan
from torchrec.modules.embedding_modules import EmbeddingBagCollection, EmbeddingCollection

from ranking.config import ConfigError, RankingConfig
from ranking.dist import DistEnv, destroy_process_group, init_process_group_from_env
from ranking.optim import apply_sparse_optimizer, dense_parameters, make_optimizers
from ranking.tables import resolve_table

__all__ = [
    "DistEnv",
    "apply_sparse_optimizer",
    "dense_parameters",
    "destroy_process_group",
    "embedding_tables",
    "format_plan",
    "init_process_group_from_env",
    "make_optimizers",
    "planner_constraints",
    "shard_model",
    "table_placements",
]

# Row-wise sharding of pooled tables has no CPU kernel in TorchRec's EBC sharder (the EC
# sharder does offer it): fail with a readable message instead of a planner error.
_CUDA_ONLY_POOLED = {"row_wise", "table_row_wise"}
_DEFAULT_KERNEL = {"data_parallel": "dense"}


def embedding_tables(model: nn.Module) -> dict[str, tuple[int, str]]:
    """Every TorchRec table anywhere in ``model``: name → (rows, "pooled" | "sequence")."""
    tables: dict[str, tuple[int, str]] = {}
    for module in model.modules():
        if isinstance(module, EmbeddingBagCollection):
            configs, kind = module.embedding_bag_configs(), "pooled"
        elif isinstance(module, EmbeddingCollection):
            configs, kind = module.embedding_configs(), "sequence"
        else:
            continue
        for c in configs:
            if c.name in tables:
                raise ValueError(f"table name {c.name!r} appears twice in the model")
            tables[c.name] = (c.num_embeddings, kind)
    return tables


def planner_constraints(model: nn.Module, config: RankingConfig, device_type: str,
                        world_size: int) -> dict[str, ParameterConstraints]:
    """``config.table_sharding`` as planner constraints (keys may be table or feature names).

    A constraint with a sharding type but no kernel gets the kernel that type needs
    (``dense`` for data-parallel, ``fused`` otherwise). Tables without a constraint are left
    to the planner, except that in a world of one process it may only keep them whole:
    ``table_wise`` or (pooled tables) ``data_parallel``. Alone, every sharding puts the whole
    table on the one rank, and the planner's pick for the item table (``row_wise``) only adds
    bucketing and split exchanges around each lookup (``benchmarks/train_step.py``, variant
    ``planner_sharding``; docs/results.md, "Training step"). Its ``data_parallel`` picks stay:
    that choice also decides which optimizer trains the table (the dense one), and forcing
    those small tables onto the fused row-wise Adagrad cost the synthetic world's ``em3`` test
    AUC (docs/ranking.md, "Architecture", the world-of-one item).
    """
    tables = embedding_tables(model)
    constraints: dict[str, ParameterConstraints] = {}
    if world_size == 1:
        # Sequence tables: table-wise only (data-parallel EC fails on CPU, see below).
        constraints = {table: ParameterConstraints(
                           sharding_types=["table_wise", "data_parallel"] if kind == "pooled"
                           else ["table_wise"])
                       for table, (_, kind) in tables.items()}
    for key, spec in config.table_sharding.items():
        table = resolve_table(key, list(tables))
        sharding_type = spec.get("sharding_type")
        kernel = spec.get("compute_kernel")
        if (device_type == "cpu" and sharding_type in _CUDA_ONLY_POOLED
                and tables[table][1] == "pooled"):
            raise ConfigError(f"{sharding_type} sharding of pooled table {table!r} needs CUDA; "
                              "on CPU use table_wise, column_wise or data_parallel")
        if (device_type == "cpu" and sharding_type == "data_parallel"
                and tables[table][1] == "sequence"):
            # TorchRec 1.8's data-parallel EmbeddingCollection returns the wrong number of
            # rows here (split_with_sizes fails in construct_jagged_tensors on the first step).
            raise ConfigError(f"data_parallel sharding of sequence table {table!r} fails in "
                              "TorchRec on CPU; use table_wise, row_wise or column_wise")
        if sharding_type is not None and kernel is None:
            kernel = _DEFAULT_KERNEL.get(sharding_type, "fused")
        constraints[table] = ParameterConstraints(
            sharding_types=[sharding_type] if sharding_type else None,
            compute_kernels=[kernel] if kernel else None,
            # Let column-wise split down to 4 columns, so that a small table (D = 8, 16) is
            # really spread over the ranks instead of kept whole as "one column shard".
            min_partition=4 if sharding_type == "column_wise" else None,
        )
    return constraints


class DataParallelUnlessAlone(DefaultDataParallelWrapper):
    """TorchRec's DDP wrapper for the dense part, skipped when the world has one process.

    Why: alone, DDP only adds work (bucket copies, a gloo all-reduce of every dense gradient
    onto itself, forward hooks) and buys nothing (docs/ranking.md, "TorchRec quirks found",
    has the measured cost).
    DMP's state dict has the same keys either way, so checkpoints move between world sizes.
    """

    def wrap(self, dmp: DistributedModelParallel, env: ShardingEnv, device: torch.device) -> None:
        if env.world_size == 1:
            dmp._dmp_wrapped_module.to(device)
            return
        super().wrap(dmp, env, device)


def make_plan(model: nn.Module, config: RankingConfig, env: DistEnv,
              pg: dist.ProcessGroup) -> ShardingPlan:
    """Runs the planner on every rank and agrees on rank 0's plan (``collective_plan``)."""
    topology = TopologyFactory.create_topology(
        trainer_config=TrainerConfig(world_size=env.world_size,
                                     local_world_size=min(env.world_size, _local_world_size())),
        kernel_config=KernelConfig(compute_device=env.device.type),
    )
    planner = EmbeddingShardingPlanner(
        topology=topology,
        constraints=planner_constraints(model, config, env.device.type, env.world_size),
        # The default (heuristic) reservation guesses the dense size from parameters, which
        # are unmaterialised on meta; a fixed share of memory is the documented alternative.
        storage_reservation=FixedPercentageStorageReservation(percentage=0.15),
        debug=False,
    )
    return planner.collective_plan(model, get_default_sharders(), pg)


def _local_world_size() -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))


def shard_model(model: nn.Module, config: RankingConfig, env: DistEnv | None = None,
                pg: dist.ProcessGroup | None = None, print_plan: bool = True,
                find_unused_parameters: bool = False) -> DistributedModelParallel:
    """Plans, applies the fused sparse optimizer and wraps ``model`` in DMP.

    Args:
        model: built on ``meta`` (recommended: no table is ever materialised whole) or CPU;
            the ranking model or any parent module that contains it.
        config: gives per-table constraints and the sparse optimizer.
        env: from ``init_process_group_from_env()`` (default: the current group's view).
        pg: process group to shard over (default: the world).
        print_plan: print the plan on the main rank.
        find_unused_parameters: passed to DDP for dense modules that skip parameters.

    Returns:
        The DMP-wrapped model: sharded tables, DDP-wrapped dense part, materialised weights.
        Its ``fused_optimizer`` holds the sparse optimizer state.
    """
    env = env or init_process_group_from_env()
    pg = pg or dist.group.WORLD
    apply_sparse_optimizer(model, config, env.device.type)
    plan = make_plan(model, config, env, pg)
    if print_plan and env.is_main:
        print(format_plan(plan), flush=True)
    return DistributedModelParallel(
        module=model,
        env=ShardingEnv.from_process_group(pg),
        device=env.device,
        plan=plan,
        sharders=get_default_sharders(),
        data_parallel_wrapper=DataParallelUnlessAlone(
            find_unused_parameters=find_unused_parameters,
            # static_graph assumes every iteration uses the same parameters; with unused
            # parameters allowed that no longer holds.
            static_graph=not find_unused_parameters,
        ),
    )


def table_placements(plan: ShardingPlan) -> dict[str, dict]:
    """Table → {"module", "sharding_type", "compute_kernel", "ranks"}; for logs and tests."""
    out: dict[str, dict] = {}
    for module_path, module_plan in plan.plan.items():
        for table, ps in module_plan.items():
            out[table] = {"module": module_path, "sharding_type": ps.sharding_type,
                          "compute_kernel": ps.compute_kernel, "ranks": list(ps.ranks or [])}
    return out


def format_plan(plan: ShardingPlan) -> str:
    """One line per table: where it lives and how it is computed."""
    rows = [("table", "module", "sharding", "kernel", "ranks")]
    for table, p in sorted(table_placements(plan).items()):
        rows.append((table, p["module"], p["sharding_type"], p["compute_kernel"],
                     ",".join(map(str, p["ranks"]))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["sharding plan:"] + [
        "  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)

