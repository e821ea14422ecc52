"""Prepared shards from a dataset directory with bounded memory: the same files as
``write_shards(prepare(load_dataset(DIR), config), OUT, buckets)``, without ever holding the
whole log (docs/prepared_shards.md, "Preparing with bounded memory").

The passes:

1. check + partition (``data.interaction_chunks``): the interactions are read a chunk at a
   time, checked as ``load_dataset`` checks them, and written in canonical columns into work
   partitions by a hash of the user id (every user's rows in one partition);
2. log facts (``data.prepare_passes``): streaming scans give the last day, the sorted users
   and the time split's cut keys; with ``item_prior_rate``, the item pass
   (``data.item_prior_pass``) regroups the rows by a hash of the item and derives the item
   prior rate of every row with ``add_item_prior_rate``, per item partition;
3. derive, per work partition in memory: side features, split, history, prior rate,
   retention labels and ``user_key``, by the same functions ``prepare`` calls (each is per
   user, given the log facts), and the item prior rate joined by ``row_id``; the train rows'
   value counts of every vocabulary and the train items and users are summed over
   partitions; rows go on to their output bucket;
4. write, per output bucket: cold flags and vocabulary indices, then one file per split by
   ``data.shards``' schema and writer; then items.parquet and the manifest.

Memory: one work partition (about ``work_rows`` rows with their derived columns) in pass 3, one
item partition (about ``work_rows`` rows in five narrow columns, or more when one item holds
more rows) in the item pass, one output bucket (a 1/``buckets`` share of the log) in pass 4,
plus tables with one row per user, item or vocabulary value.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl

from data.batch import ITEM_FEATURE, USER_FEATURE, FeatureLayout
from data.coldstart import add_cold_flags
from data.dataset import Dataset, check_user_id_types, load_items, load_users, tables_fingerprint
from data.interaction_chunks import CHUNK_ROWS, partition_interactions, read_partition
from data.item_prior_pass import item_prior_columns, item_prior_pass
from data.prepare import (
    PrepareConfig,
    Prepared,
    add_split,
    add_user_derived,
    empty_head_error,
    feature_layout,
    index_column,
    join_side_features,
    vocab_sources,
)
from data.prepare_passes import LogFacts, log_facts
from data.retention import add_retention_labels
from data.shard_manifest import (
    DEFAULT_BUCKETS,
    ITEMS_FILE,
    MANIFEST_FILE,
    SHARD_SPLITS,
    manifest_dict,
    manifest_json,
    part_path,
)
from data.shards import (
    dataset_entry,
    items_frame,
    publish,
    split_frame_to_shard,
    staging_dir,
    write_split_file,
)
from data.spec import read_spec
from data.vocab import Vocab, value_counts

# Rows per work partition in pass 3: a partition's derived frame (histories of up to
# max_history item rows per row) must fit in memory with room for the functions' sorts.
WORK_ROWS = 2_000_000
WRITTEN_BY = "polars-bounded"


def prepare_to_shards(data_dir: str | Path, out: str | Path, config: PrepareConfig | None = None,
                      buckets: int = DEFAULT_BUCKETS, progress: bool = True,
                      work_rows: int = WORK_ROWS, chunk_rows: int = CHUNK_ROWS,
                      allow_missing_media: bool = False) -> Path:
    """Prepares the dataset in ``data_dir`` into prepared shards in ``out`` (absent or an empty
    directory) and returns the path of its ``manifest.json``.

    The files are byte for byte those of ``write_shards(prepare(load_dataset(data_dir), config),
    out, buckets)`` (the manifest differs in ``written_by`` only), and bad input raises the same
    DataError as ``load_dataset``.

    Memory: the largest of one chunk of ``chunk_rows`` source rows, one work partition of about
    ``work_rows`` rows with every derived column (its histories hold up to
    ``config.max_history`` Int64 per row), one item partition of about ``work_rows`` rows in
    five columns (with ``config.item_prior_rate``; the most popular item's rows at least), and
    one output bucket of about rows / ``buckets`` rows in shard columns; plus per-user,
    per-item and per-vocabulary-value tables, and the rows that share one timestamp (the time
    split's cut). More ``buckets`` (or fewer ``work_rows``) lower the peak; the work and the temporary files (about the size of the
    shards, next to ``out``) do not grow. Half-written output is never left in ``out``.

    Raises:
        DataError: a contract violation of the dataset (as ``load_dataset``).
    """
    config = config or PrepareConfig()
    if buckets < 1:
        raise ValueError(f"buckets must be >= 1, got {buckets}")
    root = Path(data_dir).resolve()
    spec = read_spec(root)
    items, media_problems, items_path = load_items(root, spec, allow_missing_media)
    users, users_path = load_users(root, spec)
    out = Path(out)
    tmp = staging_dir(out)
    work = tmp / "_work"
    try:
        inter_path, user_dtype, partitions = partition_interactions(
            root, spec, items, items_path, work / "rows", work_rows, chunk_rows, progress)
        check_user_id_types(spec, user_dtype, users, users_path, inter_path)
        tables = [inter_path, items_path, *([users_path] if users_path else [])]
        dataset = Dataset(root=root, spec=spec, interactions=pl.DataFrame(), items=items, users=users,
                          fingerprint=tables_fingerprint(root / "dataset.toml", tables),
                          missing_media=media_problems)
        facts = log_facts(pl.scan_parquet(work / "rows" / "*" / "*.parquet"), config)
        if facts.head_rows == 0:
            raise empty_head_error(dataset, config, facts.first_day, facts.last_day)
        item_prior = (item_prior_pass(work / "rows", work, partitions, dataset.primary_label,
                                      progress) if config.item_prior_rate else None)
        vocabs, train_ids, schema = _derive_partitions(dataset, config, facts, work, partitions,
                                                        buckets, item_prior, progress)
        layout = feature_layout(dataset, config, vocabs, schema)
        split_rows = _write_buckets(tmp, work / "derived", buckets, layout, vocabs, train_ids,
                                    schema, progress)
        shutil.rmtree(work)
        prepared = Prepared(dataset=dataset, frame=pl.DataFrame(), vocabs=vocabs, layout=layout,
                            config=config)
        write_split_file(items_frame(prepared), tmp / ITEMS_FILE)
        manifest = manifest_dict(buckets, config, layout, vocabs, dataset_entry(dataset),
                                 split_rows, WRITTEN_BY)
        (tmp / MANIFEST_FILE).write_text(manifest_json(manifest), encoding="utf-8")
        publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / MANIFEST_FILE


def _derive_partitions(dataset: Dataset, config: PrepareConfig, facts: LogFacts, work: Path,
                       partitions: int, buckets: int, item_prior: Path | None, progress: bool
                       ) -> tuple[dict[str, Vocab], dict[str, pl.Series], pl.Schema]:
    """Pass 3: every work partition's derived rows into ``work/derived/<bucket>/<p>.parquet``.
    ``item_prior``: the item pass's output (``data.item_prior_pass``), None without
    ``config.item_prior_rate``.

    Returns the vocabularies (train value counts summed over partitions), the train
    ``item_id``s and ``user_id``s (cold flags), and the derived frame's schema.
    """
    from tqdm.auto import tqdm

    sources = vocab_sources(dataset, config)
    counts: dict[str, pl.DataFrame | None] = dict.fromkeys(sources)
    train_ids: dict[str, pl.Series | None] = {"item_id": None, "user_id": None}
    user_keys = facts.user_keys()
    schema = None
    for p in tqdm(range(partitions), desc="derive", unit="part", disable=not progress):
        rows = read_partition(work / "rows", p)
        if rows is None:
            continue
        part = Dataset(root=dataset.root, spec=dataset.spec, interactions=rows, items=dataset.items,
                       users=dataset.users, fingerprint=dataset.fingerprint, missing_media=[])
        frame = add_split(join_side_features(part), config, facts.last_day, facts.time_cuts)
        frame = add_user_derived(frame, dataset.primary_label, config)
        if item_prior is not None:  # where prepare calls add_item_prior_rate: same column order
            frame = frame.join(item_prior_columns(item_prior, p), on="row_id", how="left",
                               maintain_order="left")
        if config.retention:
            frame = add_retention_labels(frame, last_day=facts.last_day)
        frame = frame.join(user_keys, on="user_id", how="left", maintain_order="left")
        train = frame.filter(pl.col("split") == "train")
        for name, col in sources.items():
            counts[name] = _add_counts(counts[name], value_counts(train[col]))
        for col in train_ids:
            ids = train[col].unique()
            train_ids[col] = ids if train_ids[col] is None else pl.concat([train_ids[col], ids]).unique()
        schema = frame.schema
        bucketed = frame.with_columns((pl.col("user_key") % buckets).alias("_bucket"))
        for (b,), piece in bucketed.partition_by("_bucket", as_dict=True, include_key=False).items():
            (work / "derived" / f"{b:05d}").mkdir(parents=True, exist_ok=True)
            piece.write_parquet(work / "derived" / f"{b:05d}" / f"{p:05d}.parquet", compression="lz4")
    vocabs = {name: Vocab.from_counts(name, c, config.min_count) for name, c in counts.items()}
    # A log without train rows has no train ids: an empty set, not "take them from the frame".
    train_ids = {c: pl.Series(c, [], dtype=schema[c]) if ids is None else ids for c, ids in train_ids.items()}
    return vocabs, train_ids, schema  # type: ignore[return-value]


def _add_counts(total: pl.DataFrame | None, counts: pl.DataFrame) -> pl.DataFrame:
    if total is None:
        return counts
    return pl.concat([total, counts]).group_by("value").agg(pl.col("count").sum())


def _write_buckets(tmp: Path, derived: Path, buckets: int, layout: FeatureLayout,
                   vocabs: dict[str, Vocab], train_ids: dict[str, pl.Series], schema: pl.Schema,
                   progress: bool) -> dict[str, list[int]]:
    """Pass 4: per output bucket, its rows in ``row_id`` order with cold flags and vocabulary
    indices, one file per split. Returns split → rows per bucket file."""
    from tqdm.auto import tqdm

    for split in SHARD_SPLITS:
        (tmp / split).mkdir()
    split_rows: dict[str, list[int]] = {s: [] for s in SHARD_SPLITS}
    sources = {USER_FEATURE: "user_id", ITEM_FEATURE: "item_id"}
    sources |= {f: f for f in vocabs if f not in sources}
    def shard_rows(derived_rows: pl.DataFrame) -> pl.DataFrame:
        """Derived rows → shard columns (and ``split``): encoded before the pieces of a bucket
        meet, so the raw side features of only one piece are in memory at a time."""
        frame = add_cold_flags(derived_rows, train_items=train_ids["item_id"],
                               train_users=train_ids["user_id"])
        frame = frame.with_columns(vocabs[name].encode(frame[col]).alias(index_column(name))
                                   for name, col in sources.items())
        return split_frame_to_shard(frame, layout).with_columns(frame["split"])

    for b in tqdm(range(buckets), desc="write", unit="bucket", disable=not progress):
        files = sorted((derived / f"{b:05d}").glob("*.parquet"))
        pieces = [shard_rows(pl.read_parquet(f)) for f in files] or [shard_rows(pl.DataFrame(schema=schema))]
        frame = pl.concat(pieces, how="vertical")
        del pieces
        for split in SHARD_SPLITS:
            # Filter, then sort, as write_shards does: the Parquet writer's pages of a list
            # column depend on how its buffers lie (a filtered list column writes other bytes
            # than a gathered one with the same rows), and a sort gathers.
            rows = frame.filter(pl.col("split") == split).drop("split").sort("row_id")
            write_split_file(rows, tmp / part_path(split, b))
            split_rows[split].append(rows.height)
    return split_rows

