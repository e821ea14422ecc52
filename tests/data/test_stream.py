"""ShardStream: the batches of BatchLoader without shuffle, the documented block / rank /
shuffle-buffer order with it, disjoint ranks, and resume with iter_from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from data.batch import Batch
from data.dataset import load_dataset
from data.errors import DataError
from data.loader import BatchLoader
from data.prepare import PrepareConfig, prepare
from data.shards import load_prepared, write_shards
from data.stream import ShardStream
from tests.data.contract_fixtures import write_dataset
from tests.data.test_bags import BAG_SPEC, bag_tables
from tests.data.test_loader import write_dataset as write_string_id_dataset

# (block_rows, shuffle_buffer_rows): many chunks with batches across their edges; chunks of
# one block; one buffer holding the whole split (decoded once).
READERS = [(16, 48), (7, 7), (10_000, 10_000)]


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """String user ids, retention, prior rates; 4 buckets."""
    root = write_string_id_dataset(tmp_path_factory.mktemp("strings"))
    prepared = prepare(load_dataset(root), PrepareConfig(max_history=6, item_prior_rate=True))
    return write_shards(prepared, tmp_path_factory.mktemp("s") / "shards", buckets=4).root


@pytest.fixture(scope="module")
def bag_shards(tmp_path_factory) -> Path:
    root = write_dataset(tmp_path_factory.mktemp("bags") / "ds", bag_tables(), BAG_SPEC)
    prepared = prepare(load_dataset(root), PrepareConfig(max_history=4))
    return write_shards(prepared, tmp_path_factory.mktemp("b") / "shards", buckets=3).root


def assert_same(a: Batch, b: Batch) -> None:
    for name in ("hist_mask", "target_item_rows", "hist_item_rows", "user_key", "row_id", "dense"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None and y is None) or torch.equal(x, y), name
    for x, y in ((a.pooled, b.pooled), (a.sequence, b.sequence)):
        assert x.keys() == y.keys()
        assert torch.equal(x.values(), y.values()) and torch.equal(x.lengths(), y.lengths())
    assert a.labels.keys() == b.labels.keys() and a.label_masks.keys() == b.label_masks.keys()
    assert all(torch.equal(a.labels[k], b.labels[k]) for k in a.labels)
    assert all(torch.equal(a.label_masks[k], b.label_masks[k]) for k in a.label_masks)


@pytest.mark.parametrize("fixture", ["shards", "bag_shards"])
@pytest.mark.parametrize(("block_rows", "buffer_rows"), READERS)
@pytest.mark.parametrize(("batch_size", "drop_last"), [(13, False), (10, True)])
def test_without_shuffle_the_batches_are_batchloaders(fixture, block_rows, buffer_rows, batch_size,
                                                      drop_last, request):
    root = request.getfixturevalue(fixture)
    memory = BatchLoader(load_prepared(root), "train", batch_size, drop_last=drop_last)
    stream = ShardStream(root, "train", batch_size, drop_last=drop_last, block_rows=block_rows,
                         shuffle_buffer_rows=buffer_rows)
    assert (len(stream), stream.num_rows, stream.rows_per_rank) == \
        (len(memory), memory.num_rows, memory.rows_per_rank)
    batches = list(stream)
    assert len(batches) == len(memory) > 1
    for got, want in zip(batches, memory, strict=True):
        assert_same(got, want)


def split_positions(root: Path, batches: list[Batch]) -> np.ndarray:
    """Where the batches' rows stand in the train split (split order)."""
    ids = load_prepared(root, ("train",)).frame["row_id"].to_numpy()
    by_id = np.argsort(ids)
    streamed = np.concatenate([b.row_id.numpy() for b in batches])
    return by_id[np.searchsorted(ids, streamed, sorter=by_id)]


def documented_order(n: int, block_rows: int, buffer_rows: int, seed: int, epoch: int, rank: int,
                     world_size: int) -> np.ndarray:
    """The order docs/prepared_shards.md describes, written from the text: blocks by position,
    block order permuted with (seed, epoch), contiguous rank parts, chunks of whole pieces
    permuted with (seed, epoch, rank, chunk)."""
    n_blocks = -(-n // block_rows)
    blocks = np.random.default_rng((seed, epoch)).permutation(n_blocks)
    sequence = np.concatenate([np.arange(k * block_rows, min((k + 1) * block_rows, n)) for k in blocks])
    per_rank = n // world_size
    part = sequence[rank * per_rank:(rank + 1) * per_rank]
    pieces = np.split(part, np.flatnonzero(np.diff(part // block_rows)) + 1)
    k = max(1, buffer_rows // block_rows)
    out = []
    for c in range(0, len(pieces), k):
        rows = np.concatenate(pieces[c:c + k])
        out.append(rows[np.random.default_rng((seed, epoch, rank, c // k)).permutation(len(rows))])
    return np.concatenate(out)


@pytest.mark.parametrize(("block_rows", "buffer_rows"), READERS)
@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_shuffled_ranks_follow_the_documented_order_and_are_disjoint(shards, block_rows, buffer_rows,
                                                                      world_size):
    seen, counts = [], set()
    for rank in range(world_size):
        stream = ShardStream(shards, "train", 32, shuffle=True, seed=4, rank=rank,
                             world_size=world_size, drop_last=world_size > 1,
                             block_rows=block_rows, shuffle_buffer_rows=buffer_rows)
        stream.set_epoch(2)
        batches = list(stream)
        counts.add(len(batches))
        got = split_positions(shards, batches)
        want = documented_order(stream.num_rows, block_rows, buffer_rows, 4, 2, rank, world_size)
        keep = len(stream) * 32 if world_size > 1 else len(want)  # drop_last drops the tail
        assert (got == want[:keep]).all()
        seen.append(got)
    every = np.concatenate(seen)
    assert len(counts) == 1  # equal batch counts: no rank waits in a collective
    assert len(np.unique(every)) == len(every)  # no row on two ranks
    if world_size == 1:
        assert sorted(every) == list(range(stream.num_rows))


def test_epochs_and_seeds_reshuffle(shards):
    def order(epoch: int, seed: int) -> list[int]:
        stream = ShardStream(shards, "train", 50, shuffle=True, seed=seed, block_rows=16,
                             shuffle_buffer_rows=48)
        stream.set_epoch(epoch)
        return split_positions(shards, list(stream)).tolist()

    assert order(0, 1) == order(0, 1)
    assert order(0, 1) != order(1, 1) and order(0, 1) != order(0, 2)
    assert sorted(order(1, 1)) == sorted(order(0, 1))


@pytest.mark.parametrize(("block_rows", "buffer_rows"), READERS)
def test_iter_from_is_the_tail_of_the_epoch(shards, block_rows, buffer_rows):
    stream = ShardStream(shards, "train", 24, shuffle=True, seed=1, rank=1, world_size=2,
                         block_rows=block_rows, shuffle_buffer_rows=buffer_rows)
    stream.set_epoch(3)
    full = list(stream)
    for start in (1, 2, 5, len(full) - 1, len(full)):
        tail = list(stream.iter_from(start))
        assert len(tail) == len(full) - start
        for got, want in zip(tail, full[start:], strict=True):
            assert_same(got, want)
    with pytest.raises(ValueError, match="batch_index"):
        stream.iter_from(len(full) + 1)


def test_iter_from_skips_earlier_chunks_without_reading_them(shards, tmp_path):
    """Resuming late in the epoch reads only the chunks from there on: with bucket 0's file
    broken (after the stream opened), iterating from the start fails on it, a late start
    does not."""
    root = tmp_path / "copy"
    root.mkdir()
    for path in shards.rglob("*"):
        target = root / path.relative_to(shards)
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.is_file():
            target.write_bytes(path.read_bytes())
    stream = ShardStream(root, "train", 16, block_rows=8, shuffle_buffer_rows=8, prefetch=False)
    full = list(stream)
    first = (root / "train" / "part-00000.parquet")
    first.write_bytes(first.read_bytes()[:100])
    late = len(full) - 2
    assert [b.row_id.tolist() for b in stream.iter_from(late)] == [b.row_id.tolist() for b in full[late:]]
    with pytest.raises(DataError, match="part-00000.parquet"):
        list(stream)


def test_a_file_that_disagrees_with_the_manifest_is_one_line(shards, tmp_path):
    root = tmp_path / "copy"
    for path in shards.rglob("*"):
        if path.is_file():
            target = root / path.relative_to(shards)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    part = root / "train" / "part-00001.parquet"
    pl.read_parquet(part).head(3).write_parquet(part)
    with pytest.raises(DataError, match="part-00001.parquet: holds 3 rows, the manifest says") as err:
        ShardStream(root, "train", 8)
    assert "\n" not in str(err.value)


def test_leaving_early_stops_the_prefetch_thread(shards):
    import threading

    stream = ShardStream(shards, "train", 8, shuffle=True, block_rows=8, shuffle_buffer_rows=16)
    before = threading.active_count()
    batches = iter(stream)
    next(batches)
    batches.close()
    assert threading.active_count() == before
