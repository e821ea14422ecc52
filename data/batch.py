"""The typed training batch and the feature layout that model code builds its tables from.

A ``Batch`` is what every model consumes: TorchRec KeyedJaggedTensors for ID features, and plain
tensors for item rows (indices into the item table / content cache), labels and keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

ITEM_FEATURE = "item"            # the target item id (sequence KJT, length 1)
HISTORY_FEATURE = "hist_item"    # the behaviour sequence ids (sequence KJT, jagged)
USER_FEATURE = "user"            # the user id (pooled KJT)
RETENTION_LABELS = ("return_7d", "return_14d")
RETENTION_COUNTS = ("lt7", "lt14")


@dataclass(frozen=True)
class FeatureLayout:
    """Everything the ranking model needs to build its embedding tables, derived from data.

    Attributes:
        pooled: pooled feature name → vocabulary size (OOV row 0 included). Always holds
            ``user``; then ``user_<c>``, ``item_<c>`` (of the target item), ``ctx_<c>`` and the
            derived ``prior_rate``, ``prior_rows``.
        item_vocab_size: rows of the item ID table shared by ``item`` and ``hist_item``.
        max_history: L, the longest behaviour sequence.
        labels: the label heads, primary first.
        retention_labels: retention heads (``return_7d``, ``return_14d``) when derived.
        num_items: rows of the item table (content cache rows), cold items included.
        dense: names of the dense (float) features, in ``Batch.dense`` column order.
        bags: the pooled features that are multi-valued (a bag of 0..n values per row, mean-
            or sum-pooled); every other pooled feature has exactly one value per row.
    """

    pooled: dict[str, int]
    item_vocab_size: int
    max_history: int
    labels: tuple[str, ...]
    retention_labels: tuple[str, ...] = ()
    num_items: int = 0
    dense: tuple[str, ...] = ()
    bags: tuple[str, ...] = ()

    @property
    def sequence_features(self) -> tuple[str, str]:
        return (ITEM_FEATURE, HISTORY_FEATURE)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> FeatureLayout:
        # ``dense`` and ``bags`` are absent from layouts saved before those features existed.
        return cls(**{**d, "labels": tuple(d["labels"]),
                      "retention_labels": tuple(d["retention_labels"]),
                      "dense": tuple(d.get("dense", ())), "bags": tuple(d.get("bags", ()))})


@dataclass
class Batch:
    """One mini-batch of B rows.

    Attributes:
        pooled: KJT with the keys of ``FeatureLayout.pooled``: length 1 per row, or the bag's
            length (0..n) for a feature of ``FeatureLayout.bags``; values are vocabulary
            indices (0 = OOV).
        sequence: KJT with keys ``item`` (length 1) and ``hist_item`` (length n_b ≤ L, most
            recent first); values are item vocabulary indices.
        hist_mask: B x L bool, True where a history position holds an item (left-aligned).
        target_item_rows: B long, the target's row in the item table (content cache).
        hist_item_rows: B x L long, history items' rows in the item table; 0 where masked.
        labels: name → B float32 in {0, 1}; retention labels too (0 where censored).
        label_masks: name → B bool; False where the label is unknown (censored retention).
        user_key: B long, a dense id per distinct user (cold users too), for GAUC grouping.
        row_id: B long, the interaction's ``row_id`` (keys predictions back to rows).
        dense: B x K float32, the ``FeatureLayout.dense`` features; None when K = 0.
    """

    pooled: KeyedJaggedTensor
    sequence: KeyedJaggedTensor
    hist_mask: torch.Tensor
    target_item_rows: torch.Tensor
    hist_item_rows: torch.Tensor
    labels: dict[str, torch.Tensor]
    label_masks: dict[str, torch.Tensor] = field(default_factory=dict)
    user_key: torch.Tensor | None = None
    row_id: torch.Tensor | None = None
    dense: torch.Tensor | None = None

    @property
    def size(self) -> int:
        return int(self.target_item_rows.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        def move(t):
            return None if t is None else t.to(device, non_blocking=non_blocking)

        return Batch(
            pooled=self.pooled.to(device, non_blocking=non_blocking),
            sequence=self.sequence.to(device, non_blocking=non_blocking),
            hist_mask=move(self.hist_mask),
            target_item_rows=move(self.target_item_rows),
            hist_item_rows=move(self.hist_item_rows),
            labels={k: move(v) for k, v in self.labels.items()},
            label_masks={k: move(v) for k, v in self.label_masks.items()},
            user_key=move(self.user_key),
            row_id=move(self.row_id),
            dense=move(self.dense),
        )

    def pin_memory(self) -> Batch:
        return Batch(
            pooled=self.pooled.pin_memory(),
            sequence=self.sequence.pin_memory(),
            hist_mask=self.hist_mask.pin_memory(),
            target_item_rows=self.target_item_rows.pin_memory(),
            hist_item_rows=self.hist_item_rows.pin_memory(),
            labels={k: v.pin_memory() for k, v in self.labels.items()},
            label_masks={k: v.pin_memory() for k, v in self.label_masks.items()},
            user_key=None if self.user_key is None else self.user_key.pin_memory(),
            row_id=None if self.row_id is None else self.row_id.pin_memory(),
            dense=None if self.dense is None else self.dense.pin_memory(),
        )
