"""The Fusion-Q-Former: K learnable queries that read an item's visual and textual tokens.

Two variants (``QFormerConfig.variant``):

- ``"self"`` (EM3's public code): one transformer over the sequence [queries; vision; text];
  the query positions of the last layer are the output.
- ``"cross"`` (BLIP-2 style): each layer runs self-attention among the queries, then
  cross-attention from the queries to the (projected, fixed) tokens, then a feed-forward.

Every projection is a plain ``nn.Linear`` with a stable name (``query``, ``key``, ``value``,
``out``, ``fc1``, ``fc2``, ``vision_proj``, ``text_proj``) so peft can adapt any of them by name.
Masks are bool with True = "this token holds content"; a fully-False row is a missing modality.
Masked tokens never influence the queries, whatever their values.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Variant = Literal["self", "cross"]
QUERY, VISION, TEXT = 0, 1, 2  # rows of the modality-type embedding


@dataclass(frozen=True)
class QFormerConfig:
    """Shape of a ``FusionQFormer``; the single source of truth for its hyper-parameters.

    Attributes:
        vision_dim: Dv, width of the cached visual tokens.
        text_dim: Dt, width of the cached textual tokens.
        variant: ``"self"`` (self-attention over [queries; tokens]) or ``"cross"`` (BLIP-2).
        hidden: d, width of the queries and of the output.
        layers: number of transformer blocks.
        heads: attention heads (``hidden`` must be divisible by it).
        num_queries: K, learnable query tokens.
        dropout: dropout on attention outputs and feed-forward outputs.
        ffn_mult: feed-forward inner width = ``ffn_mult * hidden``.
    """

    vision_dim: int
    text_dim: int
    variant: Variant = "self"
    hidden: int = 256
    layers: int = 2
    heads: int = 4
    num_queries: int = 8
    dropout: float = 0.1
    ffn_mult: int = 4

    def __post_init__(self) -> None:
        if self.variant not in ("self", "cross"):
            raise ValueError(f"variant must be 'self' or 'cross', got {self.variant!r}")
        for name in ("vision_dim", "text_dim", "hidden", "layers", "heads", "num_queries", "ffn_mult"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict:
        return asdict(self)


class Attention(nn.Module):
    """Multi-head attention with separate ``query``/``key``/``value``/``out`` linears."""

    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, context: torch.Tensor, allow: torch.Tensor | None) -> torch.Tensor:
        """x: B x Tq x d attends over context: B x Tk x d.

        ``allow``: B x Tk bool (True = may be attended) or None (all). Every row must allow at
        least one key; the caller guarantees it (softmax over nothing is NaN).
        Returns B x Tq x d.
        """
        b, tq, d = x.shape
        tk = context.shape[1]
        h = self.heads
        q = self.query(x).view(b, tq, h, d // h).transpose(1, 2)
        k = self.key(context).view(b, tk, h, d // h).transpose(1, 2)
        v = self.value(context).view(b, tk, h, d // h).transpose(1, 2)
        mask = None if allow is None else allow[:, None, None, :]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.dropout(self.out(y.transpose(1, 2).reshape(b, tq, d)))


class FeedForward(nn.Module):
    def __init__(self, hidden: int, mult: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(hidden, mult * hidden)
        self.fc2 = nn.Linear(mult * hidden, hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc2(F.gelu(self.fc1(x))))


class SelfBlock(nn.Module):
    """Pre-LayerNorm transformer block over the joint [queries; tokens] sequence."""

    def __init__(self, cfg: QFormerConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.hidden)
        self.attn = Attention(cfg.hidden, cfg.heads, cfg.dropout)
        self.norm2 = nn.LayerNorm(cfg.hidden)
        self.ffn = FeedForward(cfg.hidden, cfg.ffn_mult, cfg.dropout)

    def forward(self, x: torch.Tensor, allow: torch.Tensor,
                keep: int | None = None) -> torch.Tensor:
        """x: B x (K+T) x d, allow: B x (K+T) bool → B x (K+T) x d, or B x keep x d when
        ``keep`` is given.

        ``keep``: update only the first ``keep`` positions (they still attend over all of
        ``x``). The last block of ``FusionQFormer`` keeps the K query positions: the token
        positions' outputs of that block are never read, and skipping their attention rows,
        output projection and feed-forward gives the same outputs and gradients.
        """
        h = self.norm1(x)
        if keep is not None:
            x = x[:, :keep]
        x = x + self.attn(h if keep is None else h[:, :keep], h, allow)
        return x + self.ffn(self.norm2(x))


class CrossBlock(nn.Module):
    """BLIP-2 block: query self-attention, query→token cross-attention, feed-forward."""

    def __init__(self, cfg: QFormerConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.hidden)
        self.self_attn = Attention(cfg.hidden, cfg.heads, cfg.dropout)
        self.norm2 = nn.LayerNorm(cfg.hidden)
        self.cross_attn = Attention(cfg.hidden, cfg.heads, cfg.dropout)
        self.norm3 = nn.LayerNorm(cfg.hidden)
        self.ffn = FeedForward(cfg.hidden, cfg.ffn_mult, cfg.dropout)

    def forward(self, q: torch.Tensor, tokens: torch.Tensor, allow: torch.Tensor,
                has_any: torch.Tensor) -> torch.Tensor:
        """q: B x K x d, tokens: B x T x d, allow: B x T bool, has_any: B bool → B x K x d.

        Rows with no token at all (every modality missing) get no cross-attention update:
        their mask is opened to keep the softmax finite and the result multiplied by 0.
        """
        h = self.norm1(q)
        q = q + self.self_attn(h, h, None)
        safe_allow = allow | ~has_any.view(-1, 1)
        gate = has_any.to(q.dtype).view(-1, 1, 1)
        q = q + self.cross_attn(self.norm2(q), tokens, safe_allow) * gate
        return q + self.ffn(self.norm3(q))


class FusionQFormer(nn.Module):
    """K learnable queries over the concatenated visual and textual tokens of each item.

    ``forward(vision, vision_mask, text, text_mask) -> (queries, pooled)`` with
    vision: B x Tv x Dv, vision_mask: B x Tv bool, text: B x Tt x Dt, text_mask: B x Tt bool;
    queries: B x K x d, pooled: B x d (mean of the K normalised query outputs).
    Inputs of any float dtype are cast to the module's dtype (the cache stores fp16).
    """

    def __init__(self, config: QFormerConfig) -> None:
        super().__init__()
        self.config = config
        d = config.hidden
        self.vision_proj = nn.Linear(config.vision_dim, d)
        self.text_proj = nn.Linear(config.text_dim, d)
        # Modality-type embedding: the blocks have no other way to tell a patch from a word
        # (token features carry their encoders' own positions but not their origin).
        self.modality = nn.Embedding(3, d)
        self.queries = nn.Parameter(torch.empty(config.num_queries, d))
        self.token_norm = nn.LayerNorm(d)
        block = SelfBlock if config.variant == "self" else CrossBlock
        self.blocks = nn.ModuleList(block(config) for _ in range(config.layers))
        self.final_norm = nn.LayerNorm(d)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # BERT-style small init keeps the residual stream near unit scale at the start.
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.modality.weight, std=0.02)
        nn.init.normal_(self.queries, std=0.02)

    def forward(self, vision: torch.Tensor, vision_mask: torch.Tensor, text: torch.Tensor,
                text_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (queries: B x K x d, pooled: B x d)."""
        dtype = self.queries.dtype
        b = vision.shape[0]
        vision_mask, text_mask = vision_mask.to(torch.bool), text_mask.to(torch.bool)
        # Masked inputs are zeroed first (where, not multiply: 0 * NaN is NaN), so garbage in a
        # padded slot cannot reach the output through 0-weight attention nor the gradients
        # through the projections; otherwise their values are never read.
        vision = torch.where(vision_mask.unsqueeze(-1), vision.to(dtype), 0.0)
        text = torch.where(text_mask.unsqueeze(-1), text.to(dtype), 0.0)
        v = self.vision_proj(vision) + self.modality.weight[VISION]
        t = self.text_proj(text) + self.modality.weight[TEXT]
        tokens = self.token_norm(torch.cat([v, t], dim=1))
        allow = torch.cat([vision_mask, text_mask], dim=1)
        q = (self.queries + self.modality.weight[QUERY]).unsqueeze(0).expand(b, -1, -1)
        k = q.shape[1]
        if self.config.variant == "self":
            x = torch.cat([q, tokens], dim=1)
            # Queries are always attendable, so no row of the softmax is empty even when an
            # item has no content at all.
            joint_allow = torch.cat([allow.new_ones(b, k), allow], dim=1)
            for blk in self.blocks[:-1]:
                x = blk(x, joint_allow)
            # Only the query positions of the last block are read (see SelfBlock.forward).
            out = self.blocks[-1](x, joint_allow, keep=k)
        else:
            has_any = allow.any(dim=1)
            out = q
            for blk in self.blocks:
                out = blk(out, tokens, allow, has_any)
        out = self.final_norm(out)
        return out, out.mean(dim=1)
