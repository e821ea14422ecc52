"""Frozen pooled content: each item's encoder outputs, pooled once, as fixed item features.

The recipe of the winners of the WWW 2025 multimodal CTR challenge (MMCTR): the frozen
towers' pooled item embeddings are plain dense features of the ranking model, with no fusion
model and no content training. EM3's central claim is that training the content model end to
end beats this, so the toolkit ships it as the baseline to compare with (``content.fusion =
"pooled"``, preset ``frozen_content``).

Per item: the masked mean of its vision tokens and of its text tokens (for a CNN's spatial map
that is global average pooling; for a sentence encoder's token states, the mean pooling that
sentence-transformers uses), each L2-normalised so neither modality dominates by scale, zeros
where the modality is missing, and one presence flag per modality. Only a linear projection to
the content width is trained; it is shared by the target and the history.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from multimodal.content import HasTokens, valid_positions


def pooled_item_vectors(tokens: HasTokens, chunk: int = 4096) -> torch.Tensor:
    """N x (Dv + Dt + 2) float32: [mean vision token (L2-normalised), mean text token
    (L2-normalised), has_vision, has_text] per item row; zeros for a missing modality."""
    parts = []
    for start in range(0, tokens.vision.shape[0], chunk):
        rows = slice(start, start + chunk)
        pooled = [_masked_mean(tokens.vision[rows], tokens.vision_mask[rows]),
                  _masked_mean(tokens.text[rows], tokens.text_mask[rows])]
        present = [tokens.vision_mask[rows].any(1, keepdim=True).float(),
                   tokens.text_mask[rows].any(1, keepdim=True).float()]
        parts.append(torch.cat([F.normalize(p, dim=1) for p in pooled] + present, dim=1))
    return torch.cat(parts)


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x: N x T x D (any float dtype), mask: N x T bool → N x D float32 (zeros where no token)."""
    m = mask.to(torch.float32).unsqueeze(-1)
    return (x.to(torch.float32) * m).sum(1) / m.sum(1).clamp(min=1.0)


class PooledItemContent(nn.Module):
    """Content embeddings from fixed pooled item vectors: target B x d, history B x L x d.

    The same interface as ``ItemContentEncoder`` (``encode_targets``, ``forward``, the
    parameter groups), so the EM3 composition takes either.

    Args:
        tokens: the item token features, one row per item of the item table.
        hidden: d, the content width the ranking model reads.
    """

    def __init__(self, tokens: HasTokens, hidden: int) -> None:
        super().__init__()
        # Not persistent: a pure function of the token cache, which the run already names.
        self.register_buffer("vectors", pooled_item_vectors(tokens), persistent=False)
        self.proj = nn.Linear(self.vectors.shape[1], hidden)

    @property
    def hidden(self) -> int:
        return self.proj.out_features

    def qformer_parameters(self) -> list[nn.Parameter]:
        """No content model is trained: the projection belongs to the ranking group."""
        return []

    def adapter_parameters(self) -> list[nn.Parameter]:
        return []

    def encode_targets(self, target_item_rows: torch.Tensor) -> torch.Tensor:
        """B long → B x d."""
        rows = target_item_rows.reshape(-1).long().to(self.vectors.device)
        return self.proj(self.vectors.index_select(0, rows))

    def forward(self, target_item_rows: torch.Tensor, hist_item_rows: torch.Tensor,
                hist_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """target_item_rows: B long, hist_item_rows: B x L long, hist_mask: B x L bool →
        (B x d, B x L x d with zeros at masked positions)."""
        valid, rows = valid_positions(hist_item_rows, hist_mask)
        b, length = hist_item_rows.shape
        hist = self.proj(self.vectors.index_select(0, rows.to(self.vectors.device)))
        out = hist.new_zeros(b * length, self.hidden).index_copy(0, valid.to(hist.device), hist)
        return self.encode_targets(target_item_rows), out.view(b, length, self.hidden)
