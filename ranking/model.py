"""The ranking model: ID features (+ optional caller-given content) → one logit per task.

With ``content_dim = 0`` it is the ID-only DIN/DCN baseline. With content, the EM3 model passes
the Q-Former's item embeddings in as plain tensors: the target's content joins the interaction
as one more feature and (with ``use_history_content``) the DIN attention runs over
``[id ⊕ content]`` of the target and of each history item.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from data.batch import USER_FEATURE, Batch, FeatureLayout
from data.prior_rate import LOGIT_FEATURE
from data.vocab import OOV_INDEX
from ranking.archs import (
    DCNInteraction,
    DINAttention,
    DLRMInteraction,
    OverArch,
    Positions,
    PriorOffset,
    RetentionTower,
    SparseArch,
    TaskHeads,
    bucket_positions,
)
from ranking.config import RankingConfig

# Under CPU bf16 the attention unit's N valid positions are padded to a multiple of this
# (``archs.bucket_positions``): at most 255 extra rows, small against the thousands of valid
# positions in a training batch (docs/ranking.md, "CPU precision").
POSITION_BUCKET = 256


class RankingOutput(NamedTuple):
    """What the ranking model returns (a NamedTuple so DDP and pytree can see the tensors).

    Attributes:
        logits: head name → B logits, one per label head and retention head.
        target_item_emb: B x D, the target item's ID embedding (the CIC loss aligns content
            with it).
    """

    logits: dict[str, torch.Tensor]
    target_item_emb: torch.Tensor


class RankingModel(nn.Module):
    """DIN target attention + DCNv2 (or DLRM) interaction + MLP tower + multi-task heads.

    Args:
        layout: vocabulary sizes, max history L and labels, from the data pipeline.
        config: model hyper-parameters (``content_dim`` = Dc, 0 for ID-only).
        device: ``"cpu"`` for a plain model; ``"meta"`` to build without memory and let
            ``ranking.sharding.shard_model`` materialise it.
    """

    def __init__(self, layout: FeatureLayout, config: RankingConfig,
                 device: str | torch.device = "cpu") -> None:
        super().__init__()
        # TorchRec compares the module's device with torch.device("meta"); a plain "meta"
        # string would make the sharder try to copy meta tensors.
        device = torch.device(device)
        self.layout = layout
        self.config = config
        dim = config.embedding_dim
        content_dim = config.content_dim
        self.sparse_arch = SparseArch(layout, dim, device, config.bag_pooling)
        attention_dim = dim + (content_dim if config.attends_history_content else 0)
        # Read in every forward (``ranking.testing.tower.float32_dense_tower`` turns it off
        # for a block, to compare the two precisions on the same weights).
        self._cpu_bf16 = config.cpu_bf16
        self.attention = DINAttention(attention_dim, config.attention_hidden,
                                      config.attention_softmax, config.dropout, device,
                                      padded_positions=self._cpu_bf16)
        # The interaction wants F' features of width D; wider vectors are projected down.
        self.attention_proj = (nn.Linear(attention_dim, dim, device=device)
                               if attention_dim != dim else nn.Identity())
        self.content_proj = (nn.Linear(content_dim, dim, device=device)
                             if content_dim > 0 else None)
        # The dense (float) features become one more D-wide feature, as DLRM's bottom arch
        # does; one Linear, since there are few of them (the prior-rate logit).
        self.dense_proj = (nn.Linear(len(layout.dense), dim, device=device)
                           if layout.dense else None)
        num_features = (len(layout.pooled) + 2 + (1 if content_dim > 0 else 0)
                        + (1 if layout.dense else 0))
        if config.interaction == "dcn":
            self.interaction: nn.Module = DCNInteraction(
                num_features, dim, config.dcn_layers, config.dcn_low_rank, device)
        else:
            self.interaction = DLRMInteraction(num_features, dim)
        self.over_arch = OverArch(self.interaction.output_dim, config.over_arch,
                                  config.dropout, device)
        names = self.head_names_for(layout, config)
        own = config.retention_own_tower and len(names) > len(layout.labels)
        self.heads = TaskHeads(self.over_arch.output_dim,
                               names[:len(layout.labels)] if own else names, device)
        self.retention = (RetentionTower(self.over_arch.output_dim, dim, config.retention_hidden,
                                         names[len(layout.labels):], device) if own else None)
        # Where the user ID embedding sits in the pooled B x F x D stack (the retention tower
        # reads it); -1 without that tower.
        self._user_slot = list(layout.pooled).index(USER_FEATURE) if own else -1
        # Where ``prior_logit`` sits in ``batch.dense``; -1 without the offset.
        self._prior_slot = (list(layout.dense).index(LOGIT_FEATURE)
                            if config.prior_offset and LOGIT_FEATURE in layout.dense else -1)
        self.prior_offset = PriorOffset(device) if self._prior_slot >= 0 else None
        # Set by ``compile_dense_tower``; a plain attribute, not part of the state dict.
        self._compiled_dense: Callable[..., dict[str, torch.Tensor]] | None = None

    @staticmethod
    def head_names_for(layout: FeatureLayout, config: RankingConfig) -> tuple[str, ...]:
        """Label heads (primary first), then retention heads when enabled."""
        retention = tuple(layout.retention_labels) if config.retention_heads else ()
        return tuple(layout.labels) + retention

    @property
    def head_names(self) -> tuple[str, ...]:
        return self.heads.names + (self.retention.names if self.retention is not None else ())

    def forward(self, batch: Batch, target_content: torch.Tensor | None = None,
                hist_content: torch.Tensor | None = None) -> RankingOutput:
        """Scores a batch.

        Args:
            batch: B rows (pooled KJT, sequence KJT; ``hist_mask`` is implied by the KJT).
            target_content: B x Dc content embedding of the target item; required iff
                ``content_dim > 0``.
            hist_content: B x L x Dc content of the history items, left-aligned like
                ``batch.hist_item_rows``; required iff the attention uses history content.

        Returns:
            ``RankingOutput`` with B logits per head and the B x D target ID embedding.
        """
        self._check_content(target_content, hist_content)
        self._check_dense(batch.dense)
        pooled, target_id_emb, history, mask = self.sparse_arch(
            self._hide_user_ids(batch.pooled), batch.sequence)
        target = self._hide_target_ids(target_id_emb)
        if self.config.detach_history_ids:
            history = history.detach()
        # Found here, in eager mode: how many positions are valid depends on the data, and a
        # compiled dense tower would have to break its graph at this op.
        positions = mask.nonzero(as_tuple=True)
        bf16 = self._cpu_bf16 and pooled.device.type == "cpu"
        if bf16:
            positions = bucket_positions(positions, mask.shape[1], POSITION_BUCKET)
        dense = self.dense_tower if self._compiled_dense is None else self._compiled_dense
        # bf16 matmuls on a CPU that has them (``cpu_precision``): the attention unit over
        # the N valid history positions is most of the step's FLOPs. A no-op off CPU.
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = dense(pooled, target, history, mask, positions, target_content,
                           hist_content, batch.dense)
        # CIC aligns content with the item's own ID embedding, hidden or not.
        return RankingOutput(logits=logits, target_item_emb=target_id_emb)

    def dense_tower(self, pooled: torch.Tensor, target: torch.Tensor, history: torch.Tensor,
                    mask: torch.Tensor, positions: Positions,
                    target_content: torch.Tensor | None,
                    hist_content: torch.Tensor | None,
                    dense_features: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Everything after the embedding lookups: attention, interaction, tower, heads.

        Args:
            pooled: B x F x D pooled ID embeddings; target: B x D; history: B x L x D;
            mask: B x L bool; positions: ``mask.nonzero(as_tuple=True)``;
            target_content, hist_content: as in ``forward``;
            dense_features: B x K, ``batch.dense`` (None when the layout has no dense feature).

        Returns:
            head name → B logits.
        """
        query, keys = target, history
        if self.config.attends_history_content:
            query = torch.cat([target, target_content], dim=-1)
            keys = torch.cat([history, hist_content], dim=-1)
        attended = self.attention_proj(self.attention(query, keys, mask, positions))
        features = [pooled, target.unsqueeze(1), attended.unsqueeze(1)]
        if self.content_proj is not None:
            features.append(self.content_proj(target_content).unsqueeze(1))
        if self.dense_proj is not None:
            features.append(self.dense_proj(dense_features).unsqueeze(1))
        stack = torch.cat(features, dim=1)
        tower = self.over_arch(self.interaction(stack))
        # The heads stay in float32 under CPU autocast: a bf16 logit has 8 significant bits,
        # so scores would tie and AUC would lose resolution. They are a few hundred FLOPs.
        with torch.autocast("cpu", enabled=False):
            tower = tower.float()
            logits = self.heads(tower)
            if self.prior_offset is not None:
                primary = self.layout.labels[0]
                logits[primary] = logits[primary] + self.prior_offset(
                    dense_features[:, self._prior_slot].float())
            if self.retention is not None:
                logits.update(self.retention(tower, pooled[:, self._user_slot].float()))
        return logits

    def compile_dense_tower(self) -> None:
        """Runs ``dense_tower`` through ``torch.compile`` (Inductor) from the next call on.

        Why: on CPU the tower is a chain of small matmuls and memory-bound elementwise ops
        over N x H activations (N valid history positions); eager runs each op as its own
        pass over memory, Inductor fuses them (the PReLUs, the factored first layer's adds,
        the scatter, the DCN products) into a few C++ loops, which shortens the ``id_only``
        training step (``benchmarks/train_step.py``, variant ``eager_tower``; docs/results.md,
        "Training step").
        ``dynamic=True``: the batch size (last batch, evaluation) and N change every call,
        and one graph with symbolic sizes avoids a recompilation per shape. Train and eval
        mode get a graph each. The sparse part (TorchRec) stays eager.
        Under a dispatch mode (``FlopCounterMode``) Dynamo does not trace, and a first call
        made there would leave the tower eager for the rest of the run: run such a block under
        ``torch.compiler.set_stance("force_eager")``, as ``recsys.training.perf.count_flops`` does
        (docs/ranking.md, "Architecture", the ``torch.compile`` item).
        """
        self._compiled_dense = torch.compile(self.dense_tower, dynamic=True)

    def _hide_target_ids(self, target: torch.Tensor) -> torch.Tensor:
        """B x D → B x D with ``item_id_dropout`` of the rows swapped for the unknown item.

        Only in training: it is how the unknown-item embedding, and the paths that must score
        a cold item without it, get trained (there are no unknown IDs in the train split).
        """
        p = self.config.item_id_dropout
        if not self.training or p == 0.0:
            return target
        hide = torch.rand(target.shape[0], device=target.device) < p
        return self.sparse_arch.unknown_item.replace(target, hide)

    def _hide_user_ids(self, pooled: KeyedJaggedTensor) -> KeyedJaggedTensor:
        """The pooled KJT with ``user_id_dropout`` of the rows' user IDs set to ``OOV_INDEX``.

        Only in training. The user feature has length 1, so the user IDs are the B values
        from the user key's offset (bags before it may have any length). Why the OOV row and not a separate vector (as for items):
        the OOV row is what a cold user reads anyway, and the fused sparse optimizer trains it
        like any other row. On a time split most evaluation rows can come from users the
        training log never saw (on MovieLens most of the test rows: docs/ranking.md, "Unknown
        users").
        """
        p = self.config.user_id_dropout
        if not self.training or p == 0.0:
            return pooled
        b = pooled.stride()
        start = int(pooled.offset_per_key()[pooled.keys().index(USER_FEATURE)])
        values = pooled.values().clone()
        hide = torch.rand(b, device=values.device) < p
        values[start:start + b] = values[start:start + b].masked_fill(hide, OOV_INDEX)
        return KeyedJaggedTensor(keys=pooled.keys(), values=values, lengths=pooled.lengths(),
                                 stride=b)

    def _check_dense(self, dense: torch.Tensor | None) -> None:
        k = len(self.layout.dense)
        if k == 0:
            if dense is not None:
                raise ValueError("dense features given to a model whose layout has none")
            return
        if dense is None or dense.dim() != 2 or dense.shape[1] != k:
            shape = None if dense is None else tuple(dense.shape)
            raise ValueError(f"batch.dense must be B x {k} ({', '.join(self.layout.dense)}), "
                             f"got {shape}")

    def _check_content(self, target_content: torch.Tensor | None,
                       hist_content: torch.Tensor | None) -> None:
        # Shape checks only (no data-dependent syncs): a silent broadcast here would train
        # the wrong thing without an error.
        dc = self.config.content_dim
        if dc == 0:
            if target_content is not None or hist_content is not None:
                raise ValueError("content given to an ID-only model (config.content_dim = 0)")
            return
        if target_content is None or target_content.dim() != 2 or target_content.shape[1] != dc:
            shape = None if target_content is None else tuple(target_content.shape)
            raise ValueError(f"target_content must be B x {dc}, got {shape}")
        if self.config.attends_history_content:
            want = (target_content.shape[0], self.layout.max_history, dc)
            if hist_content is None or tuple(hist_content.shape) != want:
                shape = None if hist_content is None else tuple(hist_content.shape)
                raise ValueError(f"hist_content must be B x L x Dc = {want}, got {shape}")
        elif hist_content is not None:
            raise ValueError("hist_content given but config.use_history_content is False")
