"""The ranking model trained without ``recsys``: one step, and batched prediction.

For tests and benchmarks of ``ranking`` alone (the ID-only model on toy batches, sharded or
not). Training proper goes through ``recsys.training.train``, whose EM3 model owns its loss.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from data.batch import Batch
from ranking.loss import multitask_bce


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: Batch,
               loss_weights: dict[str, float] | None = None,
               **forward_kwargs: Any) -> dict[str, float]:
    """Forward, masked multi-task BCE, backward (sparse tables update here), dense step.

    Args:
        model: plain or DMP-wrapped model returning a ``RankingOutput``.
        optimizer: from ``make_optimizers`` (its ``step`` moves the dense parameters).
        forward_kwargs: passed to the model (e.g. content tensors).

    Returns:
        ``{"loss": total, "<head>": per-head loss}`` as floats.
    """
    out = model(batch, **forward_kwargs)
    loss, per_head = multitask_bce(out.logits, batch.labels, batch.label_masks, loss_weights)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return {"loss": float(loss.detach()), **{k: float(v) for k, v in per_head.items()}}


@torch.no_grad()
def predict(model: nn.Module, batches: Iterable[Batch], **forward_kwargs: Any
            ) -> dict[str, torch.Tensor]:
    """Head → N logits over all batches, in batch order; eval mode, restored afterwards."""
    was_training = model.training
    model.eval()
    chunks: dict[str, list[torch.Tensor]] = {}
    try:
        for batch in batches:
            for name, logit in model(batch, **forward_kwargs).logits.items():
                chunks.setdefault(name, []).append(logit.float().cpu())
    finally:
        model.train(was_training)
    return {name: torch.cat(parts) for name, parts in chunks.items()}
