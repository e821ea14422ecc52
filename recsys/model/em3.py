"""The EM3 composition: content encoder (Q-Former + LoRA history path) → ranking model, + CIC
and the interest contrastive loss. With ``content.fusion = "pooled"`` the content is the frozen
towers' pooled vectors instead (``multimodal.pooled_content``, the frozen-content baseline).

``EM3Model`` is one ``nn.Module`` so that ``DistributedModelParallel`` can wrap it whole: the
ranking model's TorchRec tables get sharded, everything else (Q-Former, adapters, attention,
towers, CIC and interest projections) is the dense part that DDP replicates.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from data.batch import Batch, FeatureLayout
from multimodal.content import HasTokens, ItemContentEncoder
from multimodal.lora_sequence import LoraSettings
from multimodal.pooled_content import PooledItemContent
from multimodal.qformer import QFormerConfig
from ranking.loss import multitask_bce
from ranking.model import RankingModel
from recsys.config import TrainConfig
from recsys.model.cic import ContentIdContrastive
from recsys.model.interest import InterestContrastive


class EM3Output(NamedTuple):
    """Forward result.

    Attributes:
        logits: head → B logits (labels, then retention heads).
        target_item_emb: B x D target item ID embedding.
        target_content: B x d target content embedding, or None for the ID-only model.
        hist_content: B x L x d history content embeddings, or None without a sequence path.
        loss: the scalar training loss (``EM3Model.loss``), only when ``forward`` was asked
            for it (``with_loss=True``); else None.
        loss_parts: its parts as floats (``bce_<head>``, ``cic``, ``interest``, ``loss``),
            with ``loss``; else None.
    """

    logits: dict[str, torch.Tensor]
    target_item_emb: torch.Tensor
    target_content: torch.Tensor | None
    hist_content: torch.Tensor | None = None
    loss: torch.Tensor | None = None
    loss_parts: dict[str, float] | None = None


def qformer_config(cfg: TrainConfig, tokens: HasTokens) -> QFormerConfig:
    c = cfg.content
    return QFormerConfig(vision_dim=int(tokens.vision.shape[-1]), text_dim=int(tokens.text.shape[-1]),
                         variant=c.variant, hidden=c.hidden, layers=c.layers, heads=c.heads,
                         num_queries=c.num_queries, dropout=c.dropout)


class EM3Model(nn.Module):
    """Content + ranking + CIC, trained end to end.

    Args:
        layout: feature layout from the data pipeline.
        cfg: the training config (content section decides whether content is used at all).
        tokens: the item token features (needed iff ``cfg.content.enabled``).
        device: ``"meta"`` builds the ranking tables without memory for sharding; the content
            side is always built for real on CPU (DMP leaves non-meta modules as they are).
    """

    def __init__(self, layout: FeatureLayout, cfg: TrainConfig, tokens: HasTokens | None = None,
                 device: str | torch.device = "cpu") -> None:
        super().__init__()
        self.cfg = cfg
        ranking_cfg = cfg.ranking_config()
        self.ranking = RankingModel(layout, ranking_cfg, device=device)
        self.content: ItemContentEncoder | PooledItemContent | None = None
        self.cic: ContentIdContrastive | None = None
        self.seq_mode = cfg.content.seq_mode
        if cfg.content.enabled and tokens is None:
            raise ValueError("content is enabled but no token features were given")
        if cfg.content.enabled and cfg.content.fusion == "pooled":
            self.content = PooledItemContent(tokens, cfg.content.hidden)
        elif cfg.content.enabled:
            c = cfg.content
            # seq_mode "none" never calls the history path; "frozen" keeps the encoder free of
            # adapters there.
            self.content = ItemContentEncoder(
                tokens, qformer_config(cfg, tokens),
                seq_mode="frozen" if c.seq_mode == "none" else c.seq_mode,
                lora=LoraSettings(r=c.lora_r, alpha=c.lora_alpha, dropout=c.lora_dropout,
                                  targets=tuple(c.lora_targets)),
                dedup=c.dedup, checkpoint_history=c.checkpoint_history,
                cpu_bf16=c.cpu_bf16)
        if cfg.uses_cic:
            self.cic = ContentIdContrastive(cfg.content.hidden, ranking_cfg.embedding_dim,
                                            proj_dim=cfg.cic.proj_dim, temperature=cfg.cic.temperature)
        self.interest: InterestContrastive | None = None
        if cfg.uses_interest:
            self.interest = InterestContrastive(cfg.content.hidden, proj_dim=cfg.interest.proj_dim,
                                                temperature=cfg.interest.temperature)

    def forward(self, batch: Batch, with_loss: bool = False,
                interest_scale: float = 1.0) -> EM3Output:
        """Scores ``batch``; with ``with_loss`` also its training loss (``loss``, whose
        ``interest_scale`` is the interest term's warm-up factor).

        The loss is computed here, inside the module that ``DistributedModelParallel`` wraps,
        so that the whole training step (CIC and interest projections included) runs through
        the one wrapped module, as TorchRec's own train modules do."""
        target_content = hist_content = None
        if self.content is not None:
            if self.seq_mode == "none":
                target_content = self.content.encode_targets(batch.target_item_rows)
            else:
                target_content, hist_content = self.content(
                    batch.target_item_rows, batch.hist_item_rows, batch.hist_mask)
        ranked = self.ranking(batch, target_content, hist_content)
        out = EM3Output(ranked.logits, ranked.target_item_emb, target_content, hist_content)
        if not with_loss:
            return out
        loss, parts = self.loss(out, batch, interest_scale)
        return out._replace(loss=loss, loss_parts=parts)

    def loss(self, out: EM3Output, batch: Batch,
             interest_scale: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
        """Σ BCE over label heads + retention_weight · Σ BCE over retention heads (masked where
        censored) + λ · CIC + interest_scale · interest.weight · interest. Returns (total,
        parts); ``parts["interest"]`` is the unscaled loss. ``interest_scale`` in [0, 1] is the
        warm-up ramp (``Trainer.interest_scale``). ``forward(batch, with_loss=True)`` is how
        training calls it."""
        weights = {h: self.cfg.loss.retention_weight for h in self.ranking.layout.retention_labels}
        total, per_head = multitask_bce(out.logits, batch.labels, batch.label_masks, weights)
        parts = {f"bce_{k}": float(v) for k, v in per_head.items()}
        if self.cic is not None and out.target_content is not None:
            cic = self.cic(out.target_content, out.target_item_emb, batch.target_item_rows)
            parts["cic"] = float(cic.detach())
            total = total + self.cfg.cic.weight * cic
        if self.interest is not None and out.hist_content is not None:
            primary = self.ranking.layout.labels[0]
            interest = self.interest(out.target_content, out.hist_content, batch.hist_mask,
                                     batch.labels[primary] > 0.5, batch.user_key)
            parts["interest"] = float(interest.detach())
            total = total + interest_scale * self.cfg.interest.weight * interest
        parts["loss"] = float(total.detach())
        return total, parts

    def content_param_groups(self) -> dict[str, list[nn.Parameter]]:
        """The content parameters that get their own learning rates: ``qformer`` (base
        weights) and ``adapters`` (LoRA). Everything else dense trains at the ranking rate;
        embedding tables have their optimizer fused into the backward pass."""
        if self.content is None:
            return {"qformer": [], "adapters": []}
        return {"qformer": [p for p in self.content.qformer_parameters() if p.requires_grad],
                "adapters": self.content.adapter_parameters()}
