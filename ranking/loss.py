"""The multi-task loss of the ranking model: masked binary cross-entropy per head."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def multitask_bce(logits: dict[str, torch.Tensor], labels: dict[str, torch.Tensor],
                  label_masks: dict[str, torch.Tensor] | None = None,
                  weights: dict[str, float] | None = None
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Σ_head weight · mean BCE over the rows where the head's label is known.

    Args:
        logits: head → B logits (``RankingOutput.logits``).
        labels: head → B float labels in {0, 1}; every head in ``logits`` needs one.
        label_masks: head → B bool, False where the label is unknown (censored retention);
            a missing entry means all rows are known.
        weights: head → loss weight (default 1).

    Returns:
        (total loss scalar, head → detached per-head loss).
    """
    masks = label_masks or {}
    weights = weights or {}
    total = None
    per_head: dict[str, torch.Tensor] = {}
    for name, logit in logits.items():
        if name not in labels:
            raise KeyError(f"no labels for head {name!r}; batch has {sorted(labels)}")
        loss = F.binary_cross_entropy_with_logits(logit, labels[name].to(logit.dtype),
                                                  reduction="none")
        mask = masks.get(name)
        if mask is None:
            head_loss = loss.mean()
        else:
            m = mask.to(loss.dtype)
            # clamp: a batch with every label censored gives 0 (not NaN) and still touches the
            # head's graph, so DDP sees a gradient for every parameter.
            head_loss = (loss * m).sum() / m.sum().clamp(min=1.0)
        per_head[name] = head_loss.detach()
        weighted = weights.get(name, 1.0) * head_loss
        total = weighted if total is None else total + weighted
    if total is None:
        raise ValueError("no heads to compute a loss over")
    return total, per_head
