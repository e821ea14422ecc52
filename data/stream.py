"""Streaming the batches of a split from prepared shards with bounded memory, rank by rank.

The reader's semantics (docs/prepared_shards.md, "Reading"):

1. The split's rows in split order (files in bucket order, rows in file order) are cut into
   logical blocks of ``block_rows`` rows by position, whatever the files' row groups.
2. Per epoch, with shuffle, the block order is permuted with rng ``(seed, epoch)``; the epoch's
   row sequence (blocks in that order) is cut into ``world_size`` contiguous parts of exactly
   ``n // world_size`` rows; the remainder is dropped, as ``BatchLoader`` drops it. A rank
   reads only the blocks that overlap its part.
3. The rank's rows pass through a shuffle buffer: its pieces of blocks are grouped into chunks
   of ``shuffle_buffer_rows // block_rows`` consecutive pieces, and the rows of a chunk are
   permuted with rng ``(seed, epoch, rank, chunk)``.
4. Batches are consecutive ``batch_size`` slices of the rank's row sequence.

So batch ``b`` of an epoch is a function of (seed, epoch, rank, world_size, b) alone, and
``iter_from(b)`` starts there, decoding only the chunk that holds it and those after. Without
shuffle and with one rank, the batches are those of a ``BatchLoader`` on ``load_prepared``.
The next chunk is decoded in a background thread while the current one is batched: at most
three chunks (the one batched, one queued, one being decoded) are in memory at once.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from data.batch import ITEM_FEATURE, RETENTION_COUNTS, Batch
from data.errors import DataError, Problem
from data.loader import EpochBatches, SplitArrays
from data.prepare import index_column
from data.shard_manifest import ShardManifest, read_manifest
from data.shards import shard_columns

DEFAULT_BLOCK_ROWS = 65_536
DEFAULT_SHUFFLE_BUFFER_ROWS = 524_288
# Shard columns a batch does not use: never decoded.
UNUSED_COLUMNS = frozenset({"user_id", "item_id", "ts", "cold_item", "cold_user", *RETENTION_COUNTS})


class ShardStream(EpochBatches):
    """Iterates ``Batch`` es of one split of prepared shards; the interface of ``BatchLoader``
    (``__len__``, ``set_epoch``, ``rows_per_rank``, ``num_rows``, ``iter_from``).

    Args:
        shards: the shard directory, or its manifest already read.
        split: ``train``, ``valid`` or ``test``.
        block_rows: rows of a logical block, the unit of the block shuffle and of rank parts.
        shuffle_buffer_rows: rows permuted together (rounded down to whole blocks, at least
            one); also about the rows a chunk holds in memory.
        prefetch: decode the next chunk in a background thread.
    """

    def __init__(self, shards: str | Path | ShardManifest, split: str, batch_size: int,
                 shuffle: bool = False, seed: int = 0, rank: int = 0, world_size: int = 1,
                 drop_last: bool = False, block_rows: int = DEFAULT_BLOCK_ROWS,
                 shuffle_buffer_rows: int = DEFAULT_SHUFFLE_BUFFER_ROWS, prefetch: bool = True) -> None:
        super().__init__(batch_size, shuffle, seed, rank, world_size, drop_last)
        if block_rows < 1 or shuffle_buffer_rows < 1:
            raise ValueError(f"block_rows and shuffle_buffer_rows must be >= 1, got {block_rows} "
                             f"and {shuffle_buffer_rows}")
        manifest = shards if isinstance(shards, ShardManifest) else read_manifest(shards)
        if split not in manifest.splits:
            raise ValueError(f"no split {split!r} in {manifest.root} (has {sorted(manifest.splits)})")
        self.manifest, self.layout = manifest, manifest.layout
        self.block_rows, self.prefetch = block_rows, prefetch
        self.shuffle_buffer_rows = shuffle_buffer_rows
        self.blocks_per_chunk = max(1, shuffle_buffer_rows // block_rows)
        self._whole: SplitArrays | None = None  # the split, when one buffer holds it
        self._files = [f.path for f in manifest.splits[split]]
        self._file_start = np.concatenate([[0], np.cumsum([f.rows for f in manifest.splits[split]])])
        self.num_rows = int(self._file_start[-1])
        self._group_start = [self._row_groups(f.path, f.rows) for f in manifest.splits[split]]
        columns = shard_columns(self.layout)
        self._columns = [c for c in columns if c not in UNUSED_COLUMNS]
        self._item_index_by_row = self._read_item_index()

    def iter_from(self, batch_index: int) -> Iterator[Batch]:
        """The epoch's batches from ``batch_index`` on; chunks before it are not decoded."""
        if not 0 <= batch_index <= len(self):
            raise ValueError(f"batch_index must be in 0..{len(self)}, got {batch_index}")
        return self._batches(batch_index)

    def _batches(self, batch_index: int) -> Iterator[Batch]:
        chunks = self.rank_chunks(self.epoch)
        start = batch_index * self.batch_size
        end = min(self.rows_per_rank, len(self) * self.batch_size)
        if self.num_rows <= self.shuffle_buffer_rows:  # one buffer holds the split: decode once
            self._whole = self._whole or SplitArrays(self._read_chunk([(0, self.num_rows)]), self.layout,
                                                     self._item_index_by_row)
            order = np.concatenate([self._chunk_order(c, chunk, self.epoch)
                                    for c, chunk in enumerate(chunks)] or [np.zeros(0, np.int64)])
            produce: Iterator[tuple[SplitArrays, np.ndarray]] = iter([(self._whole, order[start:end])])
        else:
            produce = self._chunk_arrays(chunks, self.epoch, start, end)
            produce = _prefetched(produce) if self.prefetch else produce
        for arrays, order in produce:
            for s in range(0, len(order), self.batch_size):
                yield arrays.batch_at(order[s:s + self.batch_size])

    def read_arrays(self, pieces: list[tuple[int, int]]) -> SplitArrays:
        """The rows of ``pieces`` (split positions [start, stop)), in piece order, as arrays
        (batches of any of them; evaluation reads its block of rows this way)."""
        return SplitArrays(self._read_chunk(pieces), self.layout, self._item_index_by_row)

    # ---- the epoch's plan: pure arithmetic, no I/O ----------------------------------------
    def rank_pieces(self, epoch: int) -> list[tuple[int, int]]:
        """This rank's row sequence for ``epoch`` as pieces of blocks: split positions
        [start, stop), in sequence order."""
        n, size = self.num_rows, self.block_rows
        n_blocks = -(-n // size)
        order = (np.random.default_rng((self.seed, epoch)).permutation(n_blocks)
                 if self.shuffle else np.arange(n_blocks))
        block_start = order * size
        block_len = np.minimum(block_start + size, n) - block_start
        seq_start = np.concatenate([[0], np.cumsum(block_len)[:-1]]).astype(np.int64)
        lo, hi = self.rank * self.rows_per_rank, (self.rank + 1) * self.rows_per_rank
        pieces = []
        for b_start, s_start, length in zip(block_start, seq_start, block_len, strict=True):
            a, b = max(lo, s_start), min(hi, s_start + length)
            if a < b:
                pieces.append((int(b_start + a - s_start), int(b_start + b - s_start)))
        return pieces

    def rank_chunks(self, epoch: int) -> list[list[tuple[int, int]]]:
        """The rank's pieces grouped into shuffle-buffer chunks of ``blocks_per_chunk``."""
        pieces, k = self.rank_pieces(epoch), self.blocks_per_chunk
        return [pieces[i:i + k] for i in range(0, len(pieces), k)]

    # ---- decoding ----------------------------------------------------------------------------
    def _chunk_perm(self, c: int, rows: int, epoch: int) -> np.ndarray:
        """The shuffle buffer of chunk ``c``: the order of its ``rows`` rows (as read, piece by
        piece) in the rank's sequence."""
        if not self.shuffle:
            return np.arange(rows, dtype=np.int64)
        return np.random.default_rng((self.seed, epoch, self.rank, c)).permutation(rows)

    def _chunk_order(self, c: int, chunk: list[tuple[int, int]], epoch: int) -> np.ndarray:
        """Split positions of chunk ``c``'s rows in rank-sequence order."""
        positions = np.concatenate([np.arange(a, b, dtype=np.int64) for a, b in chunk])
        return positions[self._chunk_perm(c, len(positions), epoch)]

    def _chunk_arrays(self, chunks: list[list[tuple[int, int]]], epoch: int, start: int,
                      end: int) -> Iterator[tuple[SplitArrays, np.ndarray]]:
        """(arrays, row order) of the rank's rows [start, end), chunk by chunk: the arrays hold
        a chunk's rows as read, the order lists whole batches of them (the rows of a batch that
        crosses a chunk boundary are carried into the next chunk's arrays)."""
        carry: pl.DataFrame | None = None
        offset = 0  # rank-sequence position of the chunk's first row
        for c, chunk in enumerate(chunks):
            rows = sum(b - a for a, b in chunk)
            if offset + rows <= start:
                offset += rows
                continue
            if offset >= end:
                break
            frame = self._read_chunk(chunk)
            local = self._chunk_perm(c, rows, epoch)  # frame positions in sequence order
            order = local[max(0, start - offset):min(rows, end - offset)]
            offset += rows
            if carry is not None:
                order = np.concatenate([np.arange(carry.height), order + carry.height])
                frame = pl.concat([carry, frame], how="vertical")
            last = offset >= end
            whole = len(order) if last else len(order) - len(order) % self.batch_size
            carry = None if last else frame[order[whole:]]
            if whole:
                yield SplitArrays(frame, self.layout, self._item_index_by_row), order[:whole]
            if last:
                return

    def _read_chunk(self, pieces: list[tuple[int, int]]) -> pl.DataFrame:
        """The rows of ``pieces`` (split positions), in piece order; a row group shared by
        pieces of the chunk is decoded once."""
        decoded: dict[tuple[int, int], pa.Table] = {}
        tables = []
        for a, b in pieces:
            while a < b:
                # The file holding position a ("right" skips empty files starting there too).
                f = int(np.searchsorted(self._file_start, a, side="right")) - 1
                f_start, f_stop = int(self._file_start[f]), int(self._file_start[f + 1])
                stop = min(b, f_stop)
                tables.append(self._read_rows(f, a - f_start, stop - f_start, decoded))
                a = stop
        table = pa.concat_tables(tables) if tables else self._empty_table()
        return pl.from_arrow(table, rechunk=False)

    def _read_rows(self, f: int, a: int, b: int, decoded: dict[tuple[int, int], pa.Table]) -> pa.Table:
        """Rows [a, b) of file ``f``, from the row groups that hold them."""
        starts = self._group_start[f]
        g0 = int(np.searchsorted(starts, a, side="right")) - 1
        g1 = int(np.searchsorted(starts, b, side="left"))
        parts = []
        for g in range(g0, g1):
            if (f, g) not in decoded:
                decoded[(f, g)] = self._open(f).read_row_group(g, columns=self._columns)
            lo, hi = max(a, int(starts[g])), min(b, int(starts[g + 1]))
            parts.append(decoded[(f, g)].slice(lo - int(starts[g]), hi - lo))
        return pa.concat_tables(parts)

    def _open(self, f: int) -> pq.ParquetFile:
        try:
            return pq.ParquetFile(self._files[f])
        except (OSError, pa.ArrowException) as err:
            raise DataError(Problem(str(self._files[f]), f"cannot read shard file: {err}")) from None

    def _row_groups(self, path: Path, rows: int) -> np.ndarray:
        """Row-group start offsets of a split file plus its row count; checks the count
        against the manifest's."""
        try:
            meta = pq.read_metadata(path)
        except (OSError, pa.ArrowException) as err:
            raise DataError(Problem(str(path), f"cannot read shard file: {err}")) from None
        if meta.num_rows != rows:
            raise DataError(Problem(str(path), f"holds {meta.num_rows} rows, the manifest says {rows}"))
        sizes = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
        return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

    def _empty_table(self) -> pa.Table:
        return pq.ParquetFile(self._files[0]).schema_arrow.empty_table().select(self._columns)

    def _read_item_index(self) -> np.ndarray:
        """``idx_item`` of every item-table row, from items.parquet (``hist_rows`` → ids)."""
        path = self.manifest.items_path
        try:
            items = pl.read_parquet(path, columns=["item_row", index_column(ITEM_FEATURE)])
        except Exception as exc:  # polars raises many exception types for broken files
            raise DataError(Problem(str(path), f"cannot read items: {str(exc).splitlines()[0]}")) from None
        return items.sort("item_row")[index_column(ITEM_FEATURE)].to_numpy().astype(np.int64)


def _prefetched(source: Iterator, depth: int = 1) -> Iterator:
    """``source``'s items, produced in a background thread up to ``depth`` ahead; an error
    there is raised here; leaving the loop early stops the thread."""
    box: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                box.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for item in source:
                if not put(item):
                    return
            put(done)
        except BaseException as err:  # handed to the consumer, raised there
            put(err)

    thread = threading.Thread(target=run, name="shard-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = box.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()
