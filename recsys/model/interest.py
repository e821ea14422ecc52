"""Interest contrastive loss: an engaged item's content should look like its user's history.

Symmetric InfoNCE, over the batch's positively labelled rows, between the content embedding of
the target item and the masked mean content embedding of the row's behaviour sequence; the
other rows' histories are the negatives, and rows of the same user are masked out of the
denominators (their histories overlap, so they are not negatives).

Why: the ranking loss alone teaches the content encoder slowly, and CIC can only transfer what
the ID embeddings already encode. Items that users engage with together share a topic; this
term asks the content encoder to put them close, which is exactly what scoring an item with
no interactions from its content needs (co-engagement supervision, as in PinSage/ItemSage).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recsys.model.cic import symmetric_infonce


class InterestContrastive(nn.Module):
    """Args: content_dim: d; proj_dim: size of the shared space; temperature: τ."""

    def __init__(self, content_dim: int, proj_dim: int = 32, temperature: float = 0.1) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.proj = nn.Linear(content_dim, proj_dim)
        self.temperature = temperature

    def forward(self, target_content: torch.Tensor, hist_content: torch.Tensor,
                hist_mask: torch.Tensor, positive: torch.Tensor,
                user_keys: torch.Tensor) -> torch.Tensor:
        """Returns the scalar loss (0, still through the projection, when fewer than two rows qualify).

        Args:
            target_content: B x d content of the target items.
            hist_content: B x L x d content of the history items (anything where masked).
            hist_mask: B x L bool, True where a history position holds an item.
            positive: B bool, rows whose primary label is 1.
            user_keys: B long, the user of each row.
        """
        rows = positive & hist_mask.any(dim=1)
        if int(rows.sum()) < 2:
            # Still through the projection: DDP (static graph) expects the same parameters
            # to get gradients every step.
            return self.proj(target_content.float()).sum() * 0.0
        mask = hist_mask[rows].unsqueeze(-1).to(hist_content.dtype)
        history = (hist_content[rows] * mask).sum(1) / mask.sum(1)
        a = F.normalize(self.proj(target_content[rows].float()), dim=-1)
        h = F.normalize(self.proj(history.float()), dim=-1)
        return symmetric_infonce(a, h, user_keys[rows], self.temperature)
