"""The optimizers of a training run: the fused sparse optimizer DMP built for the tables, and
one dense optimizer whose parameter groups are named, so learning rates and gradient clipping
address groups by name, never by position."""

from __future__ import annotations

import torch
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper

from ranking.optim import dense_optimizer, dense_parameters
from recsys.config import TrainConfig
from recsys.model.build import em3_of

# The dense optimizer's parameter groups, by name (each has its own learning rate).
DENSE_GROUPS = ("ranking", "qformer", "adapters")


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig,
                    fused: bool = True) -> CombinedOptimizer:
    """Fused sparse optimizer (from DMP) + one ``ranking.dense_optimizer`` (AdamW by default)
    over the dense groups ``DENSE_GROUPS``, each group with its own learning rate: ranking
    tower and CIC, Q-Former base weights, LoRA adapters.

    ``model``: a ``build_model`` result, or a plain ``EM3Model`` (then every parameter,
    tables included, is dense).

    ``fused=False`` keeps the dense AdamW on PyTorch's per-parameter implementation (the
    comparison in ``benchmarks/train_step.py``); otherwise it is fused where it can be."""
    dense = dense_parameters(model)
    groups = em3_of(model).content_param_groups()
    qformer_ids = {id(p) for p in groups["qformer"]}
    adapter_ids = {id(p) for p in groups["adapters"]}
    lrs = {"ranking": cfg.ranking.dense_lr, "qformer": cfg.optim.qformer_lr,
           "adapters": cfg.optim.adapter_lr}

    def factory(params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        by_group: dict[str, list[torch.nn.Parameter]] = {k: [] for k in DENSE_GROUPS}
        for p in params:
            key = "qformer" if id(p) in qformer_ids else "adapters" if id(p) in adapter_ids else "ranking"
            by_group[key].append(p)
        return dense_optimizer(cfg.ranking.dense_optimizer,
                               [{"params": ps, "lr": lrs[k], "name": k}
                                for k, ps in by_group.items() if ps],
                               cfg.optim.weight_decay, fused)

    parts = [("sparse", model.fused_optimizer)] if hasattr(model, "fused_optimizer") else []
    parts.append(("dense", KeyedOptimizerWrapper(dense, factory)))
    return CombinedOptimizer(parts)


def clip_dense_gradients(optimizer: CombinedOptimizer, max_norm: float) -> None:
    """Clips the joint gradient norm of the ``DENSE_GROUPS`` parameters to ``max_norm``
    (sparse tables are updated inside backward and never hold a ``.grad``)."""
    params = [p for group in optimizer.param_groups if group.get("name") in DENSE_GROUPS
              for p in group["params"] if p.grad is not None]
    torch.nn.utils.clip_grad_norm_(params, max_norm)
