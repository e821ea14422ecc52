"""Mini-batches of a prepared split: numpy arrays made once, tensors and KJTs made per batch.

Sharding across ranks: the (optionally shuffled) row order of an epoch is cut into
``world_size`` contiguous blocks of exactly ``n // world_size`` rows. The remainder — fewer
than ``world_size`` rows, different ones every shuffled epoch — is DROPPED, not wrapped:
wrapping would hand the same row to two ranks in one epoch, and unequal blocks would give
ranks different batch counts and deadlock collective ops. Evaluation that must score every
row runs with ``world_size=1``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator

import numpy as np
import polars as pl
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from data.batch import HISTORY_FEATURE, ITEM_FEATURE, Batch, FeatureLayout
from data.prepare import Prepared, index_column
from data.sequences import HISTORY_COLUMN


class SplitArrays:
    """The rows of one split (or a chunk of it) as numpy arrays, and the batches of any rows.

    Built once from a frame with the shard columns (``data.shards.shard_columns``; a
    ``Prepared.frame`` has them all). The history is kept ragged (flat values + offsets, as in
    the frame) and padded per batch: a padded N x L matrix would take N·L·8 bytes — 4 GB for
    10M rows at L = 50 — where the ragged form takes the real history length.

    Args:
        frame: N rows, in the order positions refer to.
        layout: the feature layout (which pooled features, bags, labels, dense features).
        item_index_by_row: the item vocabulary index of every item-table row (maps
            ``hist_rows`` to the ``hist_item`` ID feature; ``Prepared.item_index_by_row``).
    """

    def __init__(self, frame: pl.DataFrame, layout: FeatureLayout, item_index_by_row: np.ndarray) -> None:
        self.layout = layout
        self.num_rows = frame.height
        self._pooled_keys = list(layout.pooled)
        bags = set(layout.bags)
        # N x F, one column per single-valued pooled feature in layout order (a bag's column
        # stays -1: its values are ragged, in ``self._bags``).
        self._pooled = np.stack(
            [np.full(self.num_rows, -1) if f in bags else frame[index_column(f)].to_numpy()
             for f in self._pooled_keys], axis=1
        ).astype(np.int64) if self._pooled_keys else np.zeros((self.num_rows, 0), np.int64)
        # Bag feature → (flat values, per-row lengths, per-row starts), ragged like the history.
        self._bags = {f: _ragged(frame[index_column(f)]) for f in self._pooled_keys if f in bags}
        # N x K float32, the dense features in layout order (None when K = 0).
        self._dense = (np.ascontiguousarray(frame.select(layout.dense).to_numpy(), np.float32)
                       if layout.dense else None)
        self._item_index = frame[index_column(ITEM_FEATURE)].to_numpy().astype(np.int64)
        self._item_rows = frame["item_row"].to_numpy().astype(np.int64)
        self._hist_rows, self._hist_len, self._hist_start = _ragged(frame[HISTORY_COLUMN])
        self._hist_index = item_index_by_row[self._hist_rows]

        self._labels = {name: frame[name].cast(pl.Float32).to_numpy() for name in layout.labels}
        self._masks: dict[str, np.ndarray] = {}
        for name in layout.retention_labels:
            # A censored row has label 0 and mask False: it is in the batch for the other
            # heads, but must not count as "did not return".
            self._labels[name] = frame[name].fill_null(0).cast(pl.Float32).to_numpy()
            self._masks[name] = frame[name].is_not_null().to_numpy()
        self._user_key = frame["user_key"].to_numpy().astype(np.int64)
        self._row_id = frame["row_id"].to_numpy().astype(np.int64)

    def _pooled_kjt(self, idx: np.ndarray) -> KeyedJaggedTensor:
        """The pooled KJT of rows ``idx``: key-major, one value per row for a single-valued
        feature, the row's bag for a multi-valued one."""
        size = len(idx)
        pooled = self._pooled[idx]  # B x F; a KJT is key-major, hence the transpose
        if not self._bags:
            return KeyedJaggedTensor(
                keys=self._pooled_keys,
                values=torch.from_numpy(np.ascontiguousarray(pooled.T).reshape(-1)),
                lengths=torch.ones(size * len(self._pooled_keys), dtype=torch.int32),
                stride=size,
            )
        values, lengths = [], []
        for f, key in enumerate(self._pooled_keys):
            if key in self._bags:
                flat, bag_len, bag_start = self._bags[key]
                row_len = bag_len[idx]
                values.append(flat[_ragged_positions(bag_start[idx], row_len)])
                lengths.append(row_len)
            else:
                values.append(pooled[:, f])
                lengths.append(np.ones(size, np.int64))
        return KeyedJaggedTensor(
            keys=self._pooled_keys,
            values=torch.from_numpy(np.concatenate(values).astype(np.int64)),
            lengths=torch.from_numpy(np.concatenate(lengths).astype(np.int32)),
            stride=size,
        )

    def batch_at(self, idx: np.ndarray) -> Batch:
        """The batch of the split's rows at positions ``idx`` (B long, split order; repeats
        allowed): what evaluation uses to give every rank equal-size batches."""
        size, max_len = len(idx), self.layout.max_history
        # Pad the ragged history of these rows to B x L (left-aligned, most recent first).
        lengths = self._hist_len[idx]
        mask = np.arange(max_len)[None, :] < lengths[:, None]
        flat_pos = np.where(mask, self._hist_start[idx][:, None] + np.arange(max_len)[None, :], 0)
        hist_rows = np.where(mask, self._hist_rows[flat_pos] if len(self._hist_rows) else 0, 0)
        hist_index = self._hist_index[flat_pos[mask]]  # row-major: row by row, most recent first

        pooled_kjt = self._pooled_kjt(idx)
        sequence_kjt = KeyedJaggedTensor(
            keys=[ITEM_FEATURE, HISTORY_FEATURE],
            values=torch.from_numpy(np.concatenate([self._item_index[idx], hist_index])),
            lengths=torch.from_numpy(
                np.concatenate([np.ones(size, np.int32), lengths.astype(np.int32)])
            ),
            stride=size,
        )
        labels = {name: torch.from_numpy(values[idx]) for name, values in self._labels.items()}
        masks = {name: torch.ones(size, dtype=torch.bool) for name in self.layout.labels}
        masks |= {name: torch.from_numpy(m[idx]) for name, m in self._masks.items()}
        return Batch(
            pooled=pooled_kjt,
            sequence=sequence_kjt,
            hist_mask=torch.from_numpy(mask),
            target_item_rows=torch.from_numpy(self._item_rows[idx]),
            hist_item_rows=torch.from_numpy(hist_rows.astype(np.int64)),
            labels=labels,
            label_masks=masks,
            user_key=torch.from_numpy(self._user_key[idx]),
            row_id=torch.from_numpy(self._row_id[idx]),
            dense=None if self._dense is None else torch.from_numpy(self._dense[idx]),
        )


class EpochBatches(ABC):
    """What both loaders share (``BatchLoader`` in memory, ``data.stream.ShardStream`` from
    shards): a split of ``num_rows`` rows, each epoch's order cut into ``world_size`` equal rank
    parts (the remainder dropped, module docstring), batched ``batch_size`` rows at a time.
    Subclasses set ``num_rows`` and implement ``iter_from``."""

    def __init__(self, batch_size: int, shuffle: bool, seed: int, rank: int, world_size: int,
                 drop_last: bool) -> None:
        check_sharding(batch_size, rank, world_size)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.epoch = 0
        self.num_rows = 0

    @property
    def rows_per_rank(self) -> int:
        return self.num_rows // self.world_size

    def set_epoch(self, epoch: int) -> None:
        """Selects the shuffle of ``epoch``; call before iterating, on every rank alike."""
        self.epoch = epoch

    def __len__(self) -> int:
        return batches_per_epoch(self.rows_per_rank, self.batch_size, self.drop_last)

    def __iter__(self) -> Iterator[Batch]:
        return self.iter_from(0)

    @abstractmethod
    def iter_from(self, batch_index: int) -> Iterator[Batch]:
        """The epoch's batches from ``batch_index`` on (resume), without building earlier ones."""

    def _check_start(self, batch_index: int) -> None:
        if not 0 <= batch_index <= len(self):
            raise ValueError(f"batch_index must be in 0..{len(self)}, got {batch_index}")


class BatchLoader(EpochBatches):
    """Iterates ``Batch`` es of one split of a ``Prepared`` dataset, in memory.

    The split's columns become numpy arrays once, at construction (``SplitArrays``).
    """

    def __init__(self, prepared: Prepared, split: str, batch_size: int, shuffle: bool = False,
                 seed: int = 0, rank: int = 0, world_size: int = 1, drop_last: bool = False) -> None:
        super().__init__(batch_size, shuffle, seed, rank, world_size, drop_last)
        self.layout = prepared.layout
        frame = prepared.frame.filter(pl.col("split") == split)
        self.arrays = SplitArrays(frame, self.layout, prepared.item_index_by_row())
        self.num_rows = self.arrays.num_rows

    def _rank_rows(self) -> np.ndarray:
        """This rank's row positions for the current epoch (same count on every rank)."""
        order = (np.random.default_rng((self.seed, self.epoch)).permutation(self.num_rows)
                 if self.shuffle else np.arange(self.num_rows))
        per_rank = self.rows_per_rank
        return order[self.rank * per_rank:(self.rank + 1) * per_rank]

    def iter_from(self, batch_index: int) -> Iterator[Batch]:
        """The epoch's batches from ``batch_index`` on (resume), without building earlier ones."""
        self._check_start(batch_index)
        rows, size = self._rank_rows(), self.batch_size
        return (self.arrays.batch_at(rows[b * size:(b + 1) * size]) for b in range(batch_index, len(self)))

    def batch_at(self, idx: np.ndarray) -> Batch:
        """The batch of the split's rows at positions ``idx`` (B long, split order; repeats
        allowed): what evaluation uses to give every rank equal-size batches."""
        return self.arrays.batch_at(idx)


def check_sharding(batch_size: int, rank: int, world_size: int) -> None:
    """Raises ValueError unless batch_size >= 1 and 0 <= rank < world_size."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")


def batches_per_epoch(rows_per_rank: int, batch_size: int, drop_last: bool) -> int:
    """Batches of one rank's epoch: full ones, plus a short last one unless ``drop_last``."""
    full, rest = divmod(rows_per_rank, batch_size)
    return full + (1 if rest and not drop_last else 0)


def _ragged(column: pl.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A List column → (flat Int64 values, per-row lengths, per-row start offsets)."""
    lengths = column.list.len().fill_null(0).to_numpy().astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    flat = column.explode(empty_as_null=False, keep_nulls=False).to_numpy().astype(np.int64)
    return flat, lengths, starts


def _ragged_positions(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Flat positions of the selected rows' elements, row by row: for starts [5, 0] and
    lengths [2, 3], [5, 6, 0, 1, 2]."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    row_offset = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.repeat(starts, lengths) + np.arange(total) - row_offset
