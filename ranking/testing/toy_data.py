"""Small in-memory worlds of ``Batch``es: shape-correct random batches for benchmarks and a
world with a planted, learnable click signal for tests and smoke runs.

The real pipeline is ``data.prepare`` + ``data.loader``; this module only needs a
``FeatureLayout`` and builds the same ``Batch`` contract (pooled KJT with length-1 features,
sequence KJT with ``item`` and a jagged ``hist_item``, most recent first).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from data.batch import HISTORY_FEATURE, ITEM_FEATURE, USER_FEATURE, Batch, FeatureLayout


def make_batch(layout: FeatureLayout, pooled_ids: dict[str, torch.Tensor], item: torch.Tensor,
               history: torch.Tensor, history_len: torch.Tensor,
               labels: dict[str, torch.Tensor], label_masks: dict[str, torch.Tensor] | None = None,
               user_key: torch.Tensor | None = None, row_id: torch.Tensor | None = None) -> Batch:
    """Packs id tensors into a ``Batch``.

    Args:
        pooled_ids: feature → B vocabulary indices, one per pooled feature of the layout.
        item: B target item indices (vocabulary = item table rows here).
        history: B x L item indices, left-aligned (most recent first); padding ignored.
        history_len: B lengths n_b ≤ L.
        labels: name → B float labels; label_masks: name → B bool (default all True).
    """
    batch_size, max_len = history.shape
    pooled = KeyedJaggedTensor.from_lengths_sync(
        keys=list(layout.pooled),
        values=torch.cat([pooled_ids[f].long() for f in layout.pooled]),
        lengths=torch.ones(batch_size * len(layout.pooled), dtype=torch.int64),
    )
    mask = torch.arange(max_len).unsqueeze(0) < history_len.unsqueeze(1)
    sequence = KeyedJaggedTensor.from_lengths_sync(
        keys=[ITEM_FEATURE, HISTORY_FEATURE],
        values=torch.cat([item.long(), history[mask].long()]),
        lengths=torch.cat([torch.ones(batch_size, dtype=torch.int64), history_len.long()]),
    )
    masks = label_masks or {}
    return Batch(
        pooled=pooled,
        sequence=sequence,
        hist_mask=mask,
        target_item_rows=item.long(),
        hist_item_rows=torch.where(mask, history.long(), 0),
        labels={k: v.float() for k, v in labels.items()},
        label_masks={k: masks.get(k, torch.ones(batch_size, dtype=torch.bool)) for k in labels},
        user_key=user_key if user_key is not None else pooled_ids[USER_FEATURE].long(),
        row_id=row_id if row_id is not None else torch.arange(batch_size),
    )


def random_batch(layout: FeatureLayout, batch_size: int, generator: torch.Generator) -> Batch:
    """Uniformly random ids and labels: for throughput and memory measurements only."""
    def ids(n: int, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randint(1, max(n, 2), shape, generator=generator)

    pooled = {f: ids(n, (batch_size,)) for f, n in layout.pooled.items()}
    item = ids(layout.item_vocab_size, (batch_size,))
    history = ids(layout.item_vocab_size, (batch_size, layout.max_history))
    history_len = torch.randint(0, layout.max_history + 1, (batch_size,), generator=generator)
    names = tuple(layout.labels) + tuple(layout.retention_labels)
    labels = {k: torch.randint(0, 2, (batch_size,), generator=generator) for k in names}
    return make_batch(layout, pooled, item, history, history_len, labels)


@dataclass
class ToyWorld:
    """Users with a favourite item group; clicks planted as a function of history overlap.

    ``p(click) = sigmoid(3 · share of history items in the target's group + item_bias - 1.5)``;
    histories draw 70% of their items from the user's favourite group. So the signal is
    reachable through the DIN attention (history ↔ target), through the user × item-group
    cross, and through the item id (its bias). Retention is a user trait plus noise, with
    the last 20% of each user's rows censored.
    """

    layout: FeatureLayout
    item_group: torch.Tensor  # num_items + 1, 0 for the OOV row
    user_favourite: torch.Tensor  # num_users + 1
    item_bias: torch.Tensor  # num_items + 1
    user_return_rate: torch.Tensor  # num_users + 1

    @classmethod
    def create(cls, num_users: int = 300, num_items: int = 400, num_groups: int = 8,
               max_history: int = 10, retention: bool = True, seed: int = 0) -> ToyWorld:
        g = torch.Generator().manual_seed(seed)
        item_group = torch.randint(1, num_groups + 1, (num_items + 1,), generator=g)
        item_group[0] = 0
        layout = FeatureLayout(
            pooled={USER_FEATURE: num_users + 1, "item_group": num_groups + 1, "ctx_hour": 25},
            item_vocab_size=num_items + 1,
            max_history=max_history,
            labels=("click",),
            retention_labels=("return_7d",) if retention else (),
            num_items=num_items + 1,
        )
        return cls(
            layout=layout,
            item_group=item_group,
            user_favourite=torch.randint(1, num_groups + 1, (num_users + 1,), generator=g),
            item_bias=torch.randn(num_items + 1, generator=g) * 0.8,
            user_return_rate=torch.rand(num_users + 1, generator=g),
        )

    def batches(self, num_rows: int, batch_size: int, seed: int) -> list[Batch]:
        """``num_rows`` fresh rows (deterministic in ``seed``), cut into batches."""
        g = torch.Generator().manual_seed(seed)
        n_users = self.layout.pooled[USER_FEATURE] - 1
        n_items = self.layout.item_vocab_size - 1
        L = self.layout.max_history
        user = torch.randint(1, n_users + 1, (num_rows,), generator=g)
        item = torch.randint(1, n_items + 1, (num_rows,), generator=g)
        history_len = torch.randint(0, L + 1, (num_rows,), generator=g)
        # History items: from the favourite group with prob 0.7, else uniformly random.
        random_items = torch.randint(1, n_items + 1, (num_rows, L), generator=g)
        fav_items = self._sample_in_group(self.user_favourite[user], L, g)
        from_fav = torch.rand(num_rows, L, generator=g) < 0.7
        history = torch.where(from_fav, fav_items, random_items)
        valid = torch.arange(L).unsqueeze(0) < history_len.unsqueeze(1)
        same = (self.item_group[history] == self.item_group[item].unsqueeze(1)) & valid
        share = same.sum(1) / history_len.clamp(min=1)
        p_click = torch.sigmoid(3.0 * share + self.item_bias[item] - 1.5)
        labels = {"click": (torch.rand(num_rows, generator=g) < p_click).float()}
        masks = {}
        if "return_7d" in self.layout.retention_labels:
            p_ret = self.user_return_rate[user]
            labels["return_7d"] = (torch.rand(num_rows, generator=g) < p_ret).float()
            masks["return_7d"] = torch.rand(num_rows, generator=g) >= 0.2
            labels["return_7d"] = labels["return_7d"] * masks["return_7d"]
        hour = torch.randint(1, 25, (num_rows,), generator=g)
        out = []
        for start in range(0, num_rows, batch_size):
            s = slice(start, min(start + batch_size, num_rows))
            pooled = {USER_FEATURE: user[s], "item_group": self.item_group[item[s]],
                      "ctx_hour": hour[s]}
            out.append(make_batch(
                self.layout, pooled,
                item[s], history[s], history_len[s],
                {k: v[s] for k, v in labels.items()}, {k: v[s] for k, v in masks.items()},
                row_id=torch.arange(s.start, s.stop),
            ))
        return out

    def _sample_in_group(self, groups: torch.Tensor, length: int,
                         g: torch.Generator) -> torch.Tensor:
        """B groups → B x length items drawn uniformly from each row's group."""
        order = torch.argsort(self.item_group[1:], stable=True) + 1  # items sorted by group
        counts = torch.bincount(self.item_group[1:], minlength=int(self.item_group.max()) + 1)
        starts = torch.cumsum(counts, 0) - counts
        # Every group gets at least one item in practice; clamp keeps an empty group safe.
        n = counts[groups].clamp(min=1).unsqueeze(1)
        offsets = (torch.rand(groups.shape[0], length, generator=g) * n).long()
        return order[(starts[groups].unsqueeze(1) + offsets).clamp(max=order.numel() - 1)]
