"""Optimizers: a fused (in-backward) optimizer for embedding tables, another for the rest.

Sparse tables never see a dense ``.grad``: FBGEMM's table-batched kernels apply the update
inside the backward pass (``apply_optimizer_in_backward``), only for the rows the batch
touched. Everything else (MLPs, attention, data-parallel tables, a parent's Q-Former) is a
dense parameter with its own optimizer. ``make_optimizers`` returns both behind one
``CombinedOptimizer`` whose ``state_dict`` is keyed by parameter name, so checkpoints reshard.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.distributed.optim import _apply_optimizer_in_backward
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.modules.embedding_modules import EmbeddingBagCollection, EmbeddingCollection
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.rowwise_adagrad import RowWiseAdagrad

from ranking.config import ConfigError, RankingConfig

# FBGEMM's CPU kernels implement exact (row-wise) Adagrad and SGD; Adam is CUDA-only.
_CPU_SPARSE = {"rowwise_adagrad", "adagrad", "sgd"}


def sparse_optimizer_spec(config: RankingConfig,
                          device_type: str) -> tuple[type[torch.optim.Optimizer], dict[str, Any]]:
    """The optimizer class TorchRec maps to an FBGEMM fused optimizer, and its kwargs."""
    name = config.sparse_optimizer
    if device_type != "cuda" and name not in _CPU_SPARSE:
        raise ConfigError(f"sparse_optimizer {name!r} needs CUDA (FBGEMM CPU kernels support "
                          f"{sorted(_CPU_SPARSE)})")
    lr = config.sparse_lr
    if name == "rowwise_adagrad":
        return RowWiseAdagrad, {"lr": lr, "eps": config.sparse_eps}
    if name == "adagrad":
        return torch.optim.Adagrad, {"lr": lr, "eps": config.sparse_eps}
    if name == "sgd":
        return torch.optim.SGD, {"lr": lr}
    return torch.optim.Adam, {"lr": lr, "eps": config.sparse_eps}


def apply_sparse_optimizer(model: nn.Module, config: RankingConfig,
                           device_type: str = "cpu") -> int:
    """Marks every EBC/EC parameter anywhere in ``model`` for the fused optimizer.

    Must run before ``DistributedModelParallel`` (the sharder reads the marks to build the
    FBGEMM kernels). Idempotent: parameters already marked are left alone, since a second
    mark would add a second optimizer. Returns the number of parameters marked.
    """
    cls, kwargs = sparse_optimizer_spec(config, device_type)
    marked = 0
    for module in model.modules():
        if not isinstance(module, EmbeddingBagCollection | EmbeddingCollection):
            continue
        params = [p for p in module.parameters() if not hasattr(p, "_in_backward_optimizers")]
        if params:
            _apply_optimizer_in_backward(optimizer_class=cls, params=params,
                                         optimizer_kwargs=kwargs)
            marked += len(params)
    return marked


def dense_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Parameters trained by the dense optimizer: trainable and not updated in backward.

    On a DMP model this is the DDP-replicated part, data-parallel tables included (their
    kernel is dense); names are the user's module names (DMP strips its wrappers).
    """
    return {name: p for name, p in model.named_parameters()
            if p.requires_grad and not hasattr(p, "_in_backward_optimizers")}


def fused_adam_kwargs(params: list[nn.Parameter]) -> dict[str, bool]:
    """``{"fused": True}`` where PyTorch has a fused Adam(W) kernel for every parameter
    (floating point, on CPU or CUDA), else ``{}`` (the default per-parameter implementation).

    Why: the default implementation launches several ops per parameter tensor from Python; the
    fused kernel updates all of them in one call, which shortens the CPU ``id_only`` step
    (``benchmarks/train_step.py``, variant ``plain_adamw``; docs/results.md, "Training step").
    """
    ok = bool(params) and all(p.device.type in ("cpu", "cuda") and p.is_floating_point()
                              for p in params)
    return {"fused": True} if ok else {}


DENSE_OPTIMIZER_CLASSES = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
                           "adagrad": torch.optim.Adagrad, "sgd": torch.optim.SGD}


def dense_optimizer(name: str, groups: list[dict], weight_decay: float,
                    fused: bool = True) -> torch.optim.Optimizer:
    """The one place a dense optimizer is built: ``name`` (``RankingConfig.dense_optimizer``)
    over parameter ``groups`` (``{"params": [...], "lr": ..., "name": ...}``, so learning
    rates and clipping address groups by name). ``fused=False`` keeps Adam(W) on PyTorch's
    per-parameter implementation (the comparison in ``benchmarks/train_step.py``)."""
    if name not in DENSE_OPTIMIZER_CLASSES:
        raise ValueError(f"dense optimizer must be one of {sorted(DENSE_OPTIMIZER_CLASSES)}, got {name!r}")
    params = [p for g in groups for p in g["params"]]
    extra = fused_adam_kwargs(params) if fused and name in ("adam", "adamw") else {}
    return DENSE_OPTIMIZER_CLASSES[name](groups, weight_decay=weight_decay, **extra)


def dense_optimizer_factory(config: RankingConfig
                            ) -> Callable[[list[nn.Parameter]], torch.optim.Optimizer]:
    """``params → optimizer`` for ``config.dense_optimizer`` at ``config.dense_lr``."""
    return lambda params: dense_optimizer(
        config.dense_optimizer, [{"params": params, "lr": config.dense_lr}],
        config.dense_weight_decay)


def make_optimizers(model: nn.Module, config: RankingConfig,
                    dense_params: dict[str, nn.Parameter] | None = None) -> CombinedOptimizer:
    """The sparse (fused, from DMP) and dense optimizers as one keyed optimizer.

    ``step()`` steps the dense optimizer (the fused one already stepped in backward);
    ``state_dict()`` has keys ``sparse.<param>`` and ``dense.<param>``.

    Args:
        model: a DMP model (sparse part included) or a plain module (dense part only).
        dense_params: override the dense parameter set (e.g. to give a parent's Q-Former
            its own optimizer); default ``dense_parameters(model)``.
    """
    parts: list[tuple[str, KeyedOptimizer]] = []
    if isinstance(model, DistributedModelParallel):
        parts.append(("sparse", model.fused_optimizer))
    params = dense_parameters(model) if dense_params is None else dense_params
    if params:
        parts.append(("dense", KeyedOptimizerWrapper(params, dense_optimizer_factory(config))))
    return CombinedOptimizer(parts)


def init_optimizer_state(optimizer: KeyedOptimizer) -> None:
    """Creates lazy optimizer state (Adam moments) so a checkpoint can be loaded in place.

    Runs one step with zero gradients on each dense optimizer that has no state yet; fused
    optimizers have their state from construction and are skipped.
    """
    parts = optimizer.optimizers if isinstance(optimizer, CombinedOptimizer) else [("", optimizer)]
    for _, part in parts:
        if isinstance(part, KeyedOptimizerWrapper) and len(part.state) == 0:
            saved = {k: p.grad for k, p in part.params.items()}
            part.init_state()
            for k, p in part.params.items():
                p.grad = saved[k]
