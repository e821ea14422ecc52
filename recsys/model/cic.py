"""Content-ID contrastive loss (CIC, EM3 §3.3): align content embeddings with ID embeddings.

Symmetric InfoNCE between the projected, L2-normalised content embedding of each target item
and the same item's ID embedding, with the other items of the batch as negatives. A batch often
holds the same item several times; those copies are the same item, not negatives, so they are
masked out of the denominators (otherwise the loss pushes an item away from itself).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def symmetric_infonce(a: torch.Tensor, b: torch.Tensor, keys: torch.Tensor,
                      temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE of row-aligned pairs (a_i, b_i), the other rows as negatives.

    a, b: N x P L2-normalised; keys: N long. Rows that share a key with row i (other than i
    itself) are masked out of its denominators: they are the same item / user, not negatives.
    """
    logits = a @ b.T / temperature  # N x N
    same = keys[:, None] == keys[None, :]
    off_diagonal = ~torch.eye(len(keys), dtype=torch.bool, device=logits.device)
    logits = logits.masked_fill(same & off_diagonal, float("-inf"))
    target = torch.arange(len(keys), device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


class ContentIdContrastive(nn.Module):
    """Projects content (B x Dc) and ID (B x Di) embeddings into a shared space and scores them.

    Args:
        content_dim: Dc.
        id_dim: Di.
        proj_dim: size of the shared space.
        temperature: τ of the softmax; smaller is sharper.
    """

    def __init__(self, content_dim: int, id_dim: int, proj_dim: int = 64, temperature: float = 0.1) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.content_proj = nn.Linear(content_dim, proj_dim)
        self.id_proj = nn.Linear(id_dim, proj_dim)
        self.temperature = temperature

    def forward(self, content: torch.Tensor, id_emb: torch.Tensor, item_keys: torch.Tensor) -> torch.Tensor:
        """Returns the scalar symmetric InfoNCE loss.

        Args:
            content: B x Dc content embeddings of the target items.
            id_emb: B x Di ID embeddings of the same items.
            item_keys: B long, identifies the item of each row (duplicates are not negatives).
        """
        c = F.normalize(self.content_proj(content.float()), dim=-1)
        i = F.normalize(self.id_proj(id_emb.float()), dim=-1)
        return symmetric_infonce(c, i, item_keys, self.temperature)
