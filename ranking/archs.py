"""The small composable Arch modules of the ranking model (TorchRec's decomposition).

``SparseArch`` (TorchRec tables) → ``DINAttention`` (target attention over the history) →
``DCNInteraction`` or ``DLRMInteraction`` → ``OverArch`` (MLP tower) → ``TaskHeads``; with
``retention_own_tower`` the retention heads sit on a ``RetentionTower`` of their own.

Every dense parameter lives in a module with ``reset_parameters`` (``nn.Linear``, ``PReLU``,
``UnknownItem``): the model is built on the ``meta`` device and ``DistributedModelParallel``
materialises dense modules by calling their ``reset_parameters()``; a bare ``nn.Parameter``
would stay uninitialised memory.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn
from torchrec.modules.embedding_modules import EmbeddingBagCollection, EmbeddingCollection
from torchrec.sparse.jagged_tensor import JaggedTensor, KeyedJaggedTensor

from data.batch import HISTORY_FEATURE, ITEM_FEATURE, FeatureLayout
from data.vocab import OOV_INDEX
from ranking.prelu import PReLU
from ranking.tables import pooled_table_configs, sequence_table_configs


class UnknownItem(nn.Module):
    """The learned embedding of an item the vocabulary does not know (D).

    A module, not a bare parameter, so ``DistributedModelParallel`` materialises it from
    ``meta`` through ``reset_parameters``. Zero-initialised: an unknown item starts as "no ID
    information", not as a random row of the table.
    """

    def __init__(self, embedding_dim: int, device: torch.device) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(embedding_dim, device=device))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.weight.zero_()

    def replace(self, emb: torch.Tensor, unknown: torch.Tensor) -> torch.Tensor:
        """emb: N x D, unknown: N bool → N x D with the unknown rows swapped for the vector.

        Always connects ``weight`` to the graph (a zero gradient where nothing is unknown),
        which DDP's static graph needs: use it for the target item.
        """
        return torch.where(unknown.unsqueeze(-1), self.weight.to(emb.dtype), emb)

    def replace_rows(self, emb: torch.Tensor, unknown: torch.Tensor) -> torch.Tensor:
        """``replace`` for long inputs where unknown rows are rare (history items).

        Writes only the unknown rows and returns ``emb`` itself when there are none (every
        training batch: histories hold items of the training log). ``torch.where`` over every
        history row of a MovieLens batch, forward and backward, was a visible share of the
        training step in the profiler (docs/ranking.md, "Unknown items"). ``weight`` is not in
        the graph when nothing is replaced, so call ``replace`` on another input in the same
        forward (``SparseArch`` does, on the target).
        """
        rows = unknown.nonzero().squeeze(1)
        if rows.numel() == 0:
            return emb
        return emb.index_put((rows,), self.weight.to(emb.dtype).expand(rows.numel(), -1))


class SparseArch(nn.Module):
    """ID embeddings: pooled features through an EBC, target and history items through an EC.

    Item IDs outside the training vocabulary (``OOV_INDEX``: cold items) do not read the
    table's OOV row, which training never updates; they get ``unknown_item``, a vector that
    ``RankingModel`` trains only with ``item_id_dropout > 0`` (hiding the target ID of a share
    of training rows). With the default 0 it stays zero: no ID information, not a random row.

    Args:
        layout: the dataset's feature layout (vocabulary sizes, max history L).
        embedding_dim: D.
        device: ``meta`` to build without memory (sharding materialises the tables).
        bag_pooling: pooling of the multi-valued features' bags ("mean" or "sum").
    """

    def __init__(self, layout: FeatureLayout, embedding_dim: int, device: torch.device,
                 bag_pooling: str = "mean") -> None:
        super().__init__()
        if not layout.pooled:
            raise ValueError("FeatureLayout.pooled is empty; the user feature is required")
        self.pooled_features: list[str] = list(layout.pooled)
        self.max_history = int(layout.max_history)
        self.ebc = EmbeddingBagCollection(
            tables=pooled_table_configs(layout, embedding_dim, bag_pooling), device=device
        )
        self.ec = EmbeddingCollection(
            tables=sequence_table_configs(layout, embedding_dim), device=device
        )
        self.unknown_item = UnknownItem(embedding_dim, device)

    def forward(
        self, pooled: KeyedJaggedTensor, sequence: KeyedJaggedTensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Looks up every ID feature.

        Args:
            pooled: KJT with the layout's pooled features: length 1 each, or 0..n for a bag.
            sequence: KJT with ``item`` (length 1) and ``hist_item`` (jagged, ≤ L).

        Returns:
            pooled_emb: B x F x D, in layout order.
            target_emb: B x D, the target item's ID embedding.
            history_emb: B x L x D, history embeddings left-aligned, zero-padded.
            history_mask: B x L bool, True where a history position holds an item.
        """
        pooled_kt = self.ebc(pooled).to_dict()
        pooled_emb = torch.stack([pooled_kt[f] for f in self.pooled_features], dim=1)
        seq = self.ec(sequence)
        ids = sequence.to_dict()
        target_emb = self.unknown_item.replace(seq[ITEM_FEATURE].values(),
                                               ids[ITEM_FEATURE].values() == OOV_INDEX)
        history = seq[HISTORY_FEATURE]
        lengths = history.lengths()
        history_values = self.unknown_item.replace_rows(
            history.values(), ids[HISTORY_FEATURE].values() == OOV_INDEX)
        history_emb = JaggedTensor(values=history_values, lengths=lengths).to_padded_dense(
            desired_length=self.max_history)
        positions = torch.arange(self.max_history, device=lengths.device)
        history_mask = positions.unsqueeze(0) < lengths.unsqueeze(1)
        return pooled_emb, target_emb, history_emb, history_mask


# (rows, cols) of the valid history positions, as ``mask.nonzero(as_tuple=True)`` gives them.
Positions = tuple[torch.Tensor, torch.Tensor]


def bucket_positions(positions: Positions, length: int, multiple: int) -> Positions:
    """N positions → the next multiple of ``multiple``, padded with ``(0, length)``.

    Why: under CPU bf16 autocast every matmul goes through oneDNN, which builds (and caches) a
    kernel per input shape. The N x H matmuls of the attention unit change shape with every
    batch's number of valid positions, and building a kernel each step made a MovieLens
    ``id_only`` epoch slower than float32 and raised the peak RSS (docs/ranking.md, "CPU
    precision").
    Rounding N up gives a handful of shapes per run. The padding points one column past the
    history (``length``): ``DINAttention`` gathers a real key for it and scores it into a
    slot that it drops.
    """
    row, col = positions
    pad = -len(row) % multiple
    if pad == 0:
        return positions
    return (torch.cat([row, row.new_zeros(pad)]), torch.cat([col, col.new_full((pad,), length)]))


def mlp(in_dim: int, hidden: tuple[int, ...], dropout: float, device: torch.device,
        prelu: bool = False) -> nn.Sequential:
    """Linear → ReLU or PReLU (→ dropout) per hidden size; output width ``hidden[-1]``."""
    layers: list[nn.Module] = []
    for width in hidden:
        # PReLU has a parameter: it must be created on ``device`` too (meta stays meta).
        act = PReLU(device=device) if prelu else nn.ReLU()
        layers += [nn.Linear(in_dim, width, device=device), act]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        in_dim = width
    return nn.Sequential(*layers)


class DINAttention(nn.Module):
    """DIN target attention: an activation unit scores each history item against the target.

    The unit sees ``[q, k, q - k, q * k]`` (DIN, Zhou et al. 2018), but its first layer is
    evaluated in factored form: with ``W = [Wq, Wk, Wd, Wp]``,
    ``W [q; k; q-k; q*k] = (Wq + Wd) q + [Wk - Wd, Wp] [k; q*k]``, so the query's share is
    computed once per row instead of once per history position and the B x L x 4D input is
    never built (same parameters and result as the plain form, about a third fewer FLOPs in
    the unit); padding positions are skipped altogether. Without softmax the raw
    scores weight the sum, so a user with many relevant items gets a larger vector (DIN's
    argument for keeping intensity); with softmax the weights sum to one over valid positions.

    Args:
        dim: Dq, width of the query and of each key.
        hidden: hidden sizes of the activation unit.
        softmax: normalise scores with a masked softmax.
        dropout: dropout in the activation unit.
    """

    def __init__(self, dim: int, hidden: tuple[int, ...], softmax: bool, dropout: float,
                 device: torch.device, padded_positions: bool = False) -> None:
        super().__init__()
        self.softmax = softmax
        self.dim = dim
        # Whether ``positions`` may carry ``bucket_positions`` padding (column L).
        self.padded_positions = padded_positions
        self.unit = mlp(4 * dim, hidden, dropout, device, prelu=True)
        self.score = nn.Linear(hidden[-1] if hidden else 4 * dim, 1, device=device)

    def activation_unit(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor,
                        positions: Positions | None = None) -> torch.Tensor:
        """query: B x Dq, keys: B x L x Dq, mask: B x L bool → B x L raw scores (0 at padding).

        Only the valid positions go through the unit: on the default world most of the B x L
        history slots are padding, so scoring them would multiply the work (docs/ranking.md,
        "DIN attention").
        ``positions`` (``mask.nonzero(as_tuple=True)``, computed when not given) lets a caller
        find them outside a compiled region: their number depends on the data. With
        ``padded_positions`` they may end in ``bucket_positions`` padding.
        """
        if len(self.unit) == 0:  # no hidden layer: the score layer reads the plain input
            q = query.unsqueeze(1).expand_as(keys)
            scores = self.score(torch.cat([q, keys, q - keys, q * keys], dim=-1)).squeeze(-1)
            return scores * mask.to(scores.dtype)
        first: nn.Linear = self.unit[0]
        w_q, w_k, w_d, w_p = first.weight.split(self.dim, dim=1)
        # One scan of the mask gives both the gather and the scatter positions.
        row, col = mask.nonzero(as_tuple=True) if positions is None else positions  # N, N
        length = mask.shape[1]
        # Padding (row 0, column L) gathers key (0, L-1) and is scored into column L, dropped.
        k = keys[row, col.clamp(max=length - 1) if self.padded_positions else col]  # N x Dq
        per_row = F.linear(query, w_q + w_d, first.bias)                            # B x H
        per_key = F.linear(torch.cat([k, query[row] * k], dim=-1),
                           torch.cat([w_k - w_d, w_p], dim=1))                      # N x H
        valid = self.score(self.unit[1:](per_key + per_row[row])).squeeze(-1)       # N
        width = length + 1 if self.padded_positions else length  # column L: the padding's
        scores = torch.zeros((mask.shape[0], width), dtype=valid.dtype,
                             device=valid.device).index_put((row, col), valid)
        return scores[:, :length] if self.padded_positions else scores

    def forward(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor,
                positions: Positions | None = None) -> torch.Tensor:
        """query: B x Dq, keys: B x L x Dq, mask: B x L bool → B x Dq (zeros for no history).

        ``positions``: as in ``activation_unit``.
        """
        scores = self.activation_unit(query, keys, mask, positions)
        if self.softmax:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
            weights = torch.softmax(scores, dim=-1)
        else:
            weights = scores
        # Multiplying by the mask (not only filling) zeroes users with an empty history,
        # whose softmax would otherwise be uniform over padding.
        weights = weights * mask.to(weights.dtype)
        return torch.bmm(weights.unsqueeze(1), keys).squeeze(1)


class DCNInteraction(nn.Module):
    """DCNv2 cross network: ``x_{l+1} = x_0 ⊙ (W_l x_l + b_l) + x_l`` (Wang et al. 2021).

    With ``low_rank = r > 0`` each ``W_l`` is factored as ``U_l V_l`` (N x r · r x N).

    Args:
        num_features: F', features in the stack.
        dim: D, width of each feature.
    """

    def __init__(self, num_features: int, dim: int, layers: int, low_rank: int,
                 device: torch.device) -> None:
        super().__init__()
        width = num_features * dim
        self.output_dim = width
        if low_rank > 0:
            self.crosses = nn.ModuleList(
                nn.Sequential(nn.Linear(width, low_rank, bias=False, device=device),
                              nn.Linear(low_rank, width, device=device))
                for _ in range(layers)
            )
        else:
            self.crosses = nn.ModuleList(nn.Linear(width, width, device=device)
                                         for _ in range(layers))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features: B x F' x D → B x (F'·D)."""
        x0 = features.flatten(1)
        x = x0
        for cross in self.crosses:
            x = x0 * cross(x) + x
        return x


class DLRMInteraction(nn.Module):
    """DLRM dot interaction: the features themselves plus every pairwise dot product."""

    def __init__(self, num_features: int, dim: int) -> None:
        super().__init__()
        self.num_features = num_features
        self.output_dim = num_features * dim + num_features * (num_features - 1) // 2

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features: B x F' x D → B x (F'·D + F'(F'-1)/2)."""
        # Indices are rebuilt per call rather than kept as buffers: DMP materialises meta
        # buffers as zeros, which would silently turn every pair into (0, 0).
        rows, cols = torch.triu_indices(self.num_features, self.num_features, offset=1,
                                        device=features.device)
        dots = torch.bmm(features, features.transpose(1, 2))
        return torch.cat([features.flatten(1), dots[:, rows, cols]], dim=1)


class OverArch(nn.Module):
    """The MLP tower shared by every head."""

    def __init__(self, in_dim: int, hidden: tuple[int, ...], dropout: float,
                 device: torch.device) -> None:
        super().__init__()
        self.tower = mlp(in_dim, hidden, dropout, device)
        self.output_dim = hidden[-1] if hidden else in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: B x N → B x H."""
        return self.tower(x)


_UNSAFE = re.compile(r"[^0-9A-Za-z_]")


class PriorOffset(nn.Module):
    """A learned scale times a logit-valued feature, added to a head's logit (B → B).

    For ``RankingConfig.prior_offset``: the user's prior-rate logit enters the primary head
    directly, so the tower only has to learn the residual over the user's own rate, and a user
    harsher (or kinder) than any seen in training is extrapolated linearly instead of through
    the tower's saturating response. Starts at 1 (the feature is already a logit of the label
    it offsets); a module with ``reset_parameters`` so DMP materialises it from ``meta``.
    """

    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.empty(1, device=device))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.scale.fill_(1.0)

    def forward(self, logit: torch.Tensor) -> torch.Tensor:
        return self.scale * logit


class TaskHeads(nn.Module):
    """One logit per task (labels and retention labels), each its own linear layer.

    Module keys are ``head_<name>`` so that a label called ``items`` or ``keys`` cannot clash
    with ``nn.ModuleDict`` methods.
    """

    def __init__(self, in_dim: int, names: tuple[str, ...], device: torch.device) -> None:
        super().__init__()
        self.names = tuple(names)
        self._keys = {n: "head_" + _UNSAFE.sub("_", n) for n in self.names}
        if len(set(self._keys.values())) != len(self.names):
            raise ValueError(f"head names collide after sanitising: {self.names}")
        self.heads = nn.ModuleDict({k: nn.Linear(in_dim, 1, device=device)
                                    for k in self._keys.values()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: B x H → name → B logits."""
        return {n: self.heads[k](x).squeeze(-1) for n, k in self._keys.items()}


class RetentionTower(nn.Module):
    """The retention heads: their own MLP over ``[click tower output (no gradient) ⊕ user ID
    embedding]``, then one logit per retention label.

    Used with ``RankingConfig.retention_own_tower``. Why: retention proxies are a property of
    the user and the day, not of the target item, and on the shared tower their gradient pulls
    the tower, interaction and attention away from the labels (``id_only`` test AUC is higher
    with this tower on both datasets). Reading the tower through a stop-gradient keeps the
    item-side work the labels learned; the user embedding, which retention does train, is what
    lets the heads tell users apart (a probe on the detached tower alone, without it, could not
    rank return_7d on the synthetic world). With content the shared tower can be better: there
    retention also supervises the content model (docs/ranking.md, "Retention heads", has the
    figures).

    Args:
        tower_dim: H, width of the click tower's output.
        user_dim: D, width of the user ID embedding.
        hidden: hidden sizes of the retention MLP (ReLU).
        names: the retention labels.
    """

    def __init__(self, tower_dim: int, user_dim: int, hidden: tuple[int, ...],
                 names: tuple[str, ...], device: torch.device) -> None:
        super().__init__()
        self.mlp = mlp(tower_dim + user_dim, hidden, 0.0, device)
        self.heads = TaskHeads(hidden[-1] if hidden else tower_dim + user_dim, names, device)

    @property
    def names(self) -> tuple[str, ...]:
        return self.heads.names

    def forward(self, tower: torch.Tensor, user: torch.Tensor) -> dict[str, torch.Tensor]:
        """tower: B x H (the click tower's output), user: B x D → name → B logits."""
        return self.heads(self.mlp(torch.cat([tower.detach(), user], dim=-1)))
