"""Item content embeddings for a batch: target items and behaviour sequences (EM3 §3).

``ItemContentEncoder`` owns one ``FusionQFormer`` and reads cached token features by item row.
The target item always uses the Q-Former's base weights (trained). History items use, by
``seq_mode``:

- ``"frozen"``: base weights under ``torch.no_grad()`` (no gradient through history content);
- ``"lora"``: base weights detached + LoRA adapters (peft); gradient reaches adapters only;
- ``"full"``: base weights with gradient (the history trains the Q-Former too).

With ``dedup=True`` every distinct item of the batch runs through the Q-Former once and the
result is gathered back (``torch.unique`` + indexing, whose backward sums the gradients of the
copies, so outputs and gradients equal those of the naive per-position encoding). Targets and
history are deduplicated separately where their weights differ (``frozen``, ``lora``) and jointly
where they do not (``full``).

With ``cpu_bf16=True`` every Q-Former pass on CPU runs under bfloat16 autocast (weights,
gradients and optimizer state stay float32; the pooled output is returned in float32). The
rows of a pass are then padded to a multiple of ``ROW_BUCKET`` (copies of the first row whose
outputs are dropped): oneDNN builds and caches a bf16 kernel per input shape, and the number of
distinct items changes with every batch (docs/multimodal.md, "Precision and speed").
"""

from __future__ import annotations

from typing import Literal, Protocol

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from multimodal.lora_sequence import (
    LoraSettings,
    adapter_parameters,
    adapters_disabled,
    base_parameters,
    count_parameters,
    has_adapters,
    inject_history_adapter,
    run_with_frozen_base,
)
from multimodal.qformer import FusionQFormer, QFormerConfig
from multimodal.tokens import TokenTensors

SeqMode = Literal["frozen", "lora", "full"]
SEQ_MODES: tuple[str, ...] = ("frozen", "lora", "full")
# Under CPU bf16 the item rows of a Q-Former pass are padded to a multiple of this: at most 63
# extra items against the hundreds to thousands of distinct items of a training batch.
ROW_BUCKET = 64


class HasTokens(Protocol):
    """Anything exposing the four token tensors (a ``TokenCache`` or ``TokenTensors``)."""

    vision: torch.Tensor
    vision_mask: torch.Tensor
    text: torch.Tensor
    text_mask: torch.Tensor


class ItemContentEncoder(nn.Module):
    """Content embeddings of target items (B x d) and behaviour sequences (B x L x d).

    Args:
        tokens: the item token features, one row per item of the item table.
        qformer_config: shape of the Fusion-Q-Former; its ``vision_dim``/``text_dim`` must match
            the token widths.
        seq_mode: ``"frozen"``, ``"lora"`` or ``"full"`` (see the module docstring).
        lora: LoRA settings of the history path (``seq_mode="lora"`` only).
        dedup: encode each distinct item of the batch once.
        checkpoint_history: recompute the history pass during backward in chunks of
            ``history_chunk`` items instead of keeping its activations (peak memory of the
            history path ~ one chunk instead of all items; costs one extra forward). None (the
            default) turns it on for ``lora`` and off otherwise, and keeps the activations of
            the last chunk (a history of one chunk is then not recomputed at all): backward
            needs that chunk first, so keeping it leaves the peak at about one chunk and saves
            its recomputation (benchmarks/em3_speed.py, lever ``keep_last_chunk``).
        history_chunk: items per checkpointed chunk; the no-grad history pass of ``frozen``
            also runs in chunks of this size.
        cpu_bf16: run the Q-Former passes on CPU under bfloat16 autocast (see the module
            docstring); no effect on other devices.
    """

    def __init__(self, tokens: HasTokens, qformer_config: QFormerConfig, seq_mode: SeqMode = "lora",
                 lora: LoraSettings | None = None, dedup: bool = True,
                 checkpoint_history: bool | None = None, history_chunk: int = 1024,
                 cpu_bf16: bool = False) -> None:
        super().__init__()
        if seq_mode not in SEQ_MODES:
            raise ValueError(f"seq_mode must be one of {SEQ_MODES}, got {seq_mode!r}")
        self.tokens = TokenTensors(tokens.vision, tokens.vision_mask, tokens.text, tokens.text_mask)
        if (self.tokens.vision_dim, self.tokens.text_dim) != (qformer_config.vision_dim,
                                                              qformer_config.text_dim):
            raise ValueError(f"token widths (vision {self.tokens.vision_dim}, text "
                             f"{self.tokens.text_dim}) do not match the Q-Former config (vision "
                             f"{qformer_config.vision_dim}, text {qformer_config.text_dim})")
        if history_chunk < 1:
            raise ValueError(f"history_chunk must be >= 1, got {history_chunk}")
        self.seq_mode = seq_mode
        self.dedup = dedup
        self.checkpoint_history = (seq_mode == "lora") if checkpoint_history is None else checkpoint_history
        self.keep_last_chunk = checkpoint_history is None
        self.history_chunk = history_chunk
        self.cpu_bf16 = cpu_bf16
        self.lora = (lora or LoraSettings()) if seq_mode == "lora" else None
        self.qformer = FusionQFormer(qformer_config)
        if self.lora is not None:
            inject_history_adapter(self.qformer, self.lora)

    @property
    def hidden(self) -> int:
        """d, the width of every content embedding."""
        return self.qformer.config.hidden

    # ---- parameter groups (the trainer gives each its own learning rate) -----------------

    def qformer_parameters(self) -> list[nn.Parameter]:
        """Base Q-Former parameters (trained through the target path in every mode)."""
        return base_parameters(self.qformer)

    def adapter_parameters(self) -> list[nn.Parameter]:
        """LoRA parameters of the history path (empty unless ``seq_mode="lora"``)."""
        return adapter_parameters(self.qformer)

    def sequence_parameters(self) -> list[nn.Parameter]:
        """Parameters that receive gradient from the history path (the sequence's trainable
        state): none when frozen, the adapters with LoRA, the whole Q-Former when full."""
        return {"frozen": [], "lora": self.adapter_parameters(),
                "full": self.qformer_parameters()}[self.seq_mode]

    def trainable_parameter_count(self) -> int:
        return count_parameters([p for p in self.parameters() if p.requires_grad])

    # ---- encoding ---------------------------------------------------------------------------

    def _qformer_pass(self, rows: torch.Tensor, history: bool) -> torch.Tensor:
        """One Q-Former pass over ``rows`` (N long) → pooled N x d float32, no dedup, no
        checkpoint; under CPU bf16 (``cpu_bf16``) with the rows padded to ``ROW_BUCKET``."""
        device = self.qformer.queries.device
        bf16 = self.cpu_bf16 and device.type == "cpu"
        if not bf16:
            return self._pooled(rows, history, device)
        n = rows.numel()
        pad = -n % ROW_BUCKET
        if pad:
            rows = torch.cat([rows, rows[:1].expand(pad)])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            pooled = self._pooled(rows, history, device)
        return pooled[:n].float()

    def _pooled(self, rows: torch.Tensor, history: bool, device: torch.device) -> torch.Tensor:
        """The Q-Former's pooled output N x d for ``rows`` by the weights of the path."""
        v, vm, t, tm = self.tokens.gather(rows, device)
        if history and self.seq_mode == "lora":
            return run_with_frozen_base(self.qformer, v, vm, t, tm)[1]
        if has_adapters(self.qformer):
            with adapters_disabled(self.qformer):
                return self.qformer(v, vm, t, tm)[1]
        return self.qformer(v, vm, t, tm)[1]

    def encode_items(self, rows: torch.Tensor, history: bool = False) -> torch.Tensor:
        """Pooled content embeddings N x d of item ``rows`` (N long), one pass per row.

        ``history=False``: the target path (base weights, trainable). ``history=True``: the
        history path of ``seq_mode`` (no grad when frozen, adapters when lora, checkpointed
        when ``checkpoint_history``).
        """
        rows = rows.reshape(-1).long()
        if rows.numel() == 0:
            return self.qformer.queries.new_zeros(0, self.hidden)
        if not history:
            return self._qformer_pass(rows, history=False)
        if self.seq_mode == "frozen":
            # Nothing is kept for backward, so chunking only bounds the transient peak of the
            # forward (all unique history items at once would be the biggest tensors of a step).
            with torch.no_grad():
                return torch.cat([self._qformer_pass(chunk, history=True)
                                  for chunk in rows.split(self.history_chunk)])
        if self.checkpoint_history and torch.is_grad_enabled():
            # Chunked checkpointing: only row indices are saved; backward recomputes one chunk
            # at a time, so peak activation memory follows the chunk size, not the item count.
            chunks = rows.split(self.history_chunk)
            recomputed = len(chunks) - 1 if self.keep_last_chunk else len(chunks)
            return torch.cat([checkpoint(self._qformer_pass, chunk, True, use_reentrant=False)
                              for chunk in chunks[:recomputed]]
                             + [self._qformer_pass(chunk, True) for chunk in chunks[recomputed:]])
        return self._qformer_pass(rows, history=True)

    def _encode(self, rows: torch.Tensor, history: bool) -> torch.Tensor:
        """encode_items with dedup when enabled: N long → N x d."""
        if not self.dedup:
            return self.encode_items(rows, history)
        unique, inverse = torch.unique(rows, return_inverse=True)
        return self.encode_items(unique, history).index_select(0, inverse.to(self.qformer.queries.device))

    def encode_targets(self, target_item_rows: torch.Tensor) -> torch.Tensor:
        """Target content embeddings B x d (base weights; deduplicated when enabled)."""
        return self._encode(target_item_rows.reshape(-1).long(), history=False)

    def encode_history(self, hist_item_rows: torch.Tensor, hist_mask: torch.Tensor) -> torch.Tensor:
        """History content embeddings B x L x d; zeros where ``hist_mask`` (B x L bool) is False."""
        valid, rows = valid_positions(hist_item_rows, hist_mask)
        return self._scatter(self._encode(rows, history=True), valid, hist_item_rows.shape)

    def forward(self, target_item_rows: torch.Tensor, hist_item_rows: torch.Tensor,
                hist_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """target_item_rows: B long, hist_item_rows: B x L long, hist_mask: B x L bool.

        Returns (target_emb: B x d, hist_emb: B x L x d with zeros at masked positions).
        """
        if not (self.seq_mode == "full" and self.dedup):
            return self.encode_targets(target_item_rows), self.encode_history(hist_item_rows, hist_mask)
        # Full mode: both paths share weights and gradient semantics, so one pass over the
        # union of target and history items serves both.
        targets = target_item_rows.reshape(-1).long()
        valid, rows = valid_positions(hist_item_rows, hist_mask)
        emb = self._encode(torch.cat([targets.to(rows.device), rows]), history=True)
        b = targets.numel()
        return emb[:b], self._scatter(emb[b:], valid, hist_item_rows.shape)

    def _scatter(self, emb: torch.Tensor, valid: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        """Places emb (V x d) at the flat positions ``valid`` of a zero B x L x d tensor."""
        b, length = shape
        out = emb.new_zeros(b * length, self.hidden)
        return out.index_copy(0, valid.to(emb.device), emb).view(b, length, self.hidden)


def valid_positions(hist_item_rows: torch.Tensor, hist_mask: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat indices of the unmasked positions (V) and the item rows there (V long)."""
    if hist_item_rows.shape != hist_mask.shape:
        raise ValueError(f"hist_item_rows {tuple(hist_item_rows.shape)} and hist_mask "
                         f"{tuple(hist_mask.shape)} differ in shape")
    valid = hist_mask.reshape(-1).to(torch.bool).nonzero().squeeze(1)
    return valid, hist_item_rows.reshape(-1).long()[valid]
