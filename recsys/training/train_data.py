"""What a run trains and evaluates on: a dataset directory prepared in memory, or prepared
shards streamed from disk (docs/prepared_shards.md).

``--data DIR`` decides: a directory with a ``manifest.json`` is prepared shards. Then the
train split is streamed (``data.stream.ShardStream``, bounded memory, each rank its rows) and
valid/test are scored a chunk of rows at a time, each rank its block (every row once, as from
a dataset directory); only their keys and labels are held, for the predictions. The shards
fix the derived data, so a run whose ``data.*`` settings differ from the ones the shards were
prepared with is refused, not silently trained on other data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from data.batch import RETENTION_COUNTS, RETENTION_LABELS, FeatureLayout
from data.dataset import Dataset, load_dataset
from data.loader import BatchLoader
from data.prepare import PrepareConfig, Prepared, prepare
from data.shard_manifest import ShardManifest, is_shard_dir, read_manifest
from data.shards import load_prepared
from data.stream import ShardStream
from data.vocab import Vocab
from ranking.dist import DistEnv
from recsys.config import TrainConfig
from recsys.errors import UsageError
from recsys.evaluation.predict import KEY_COLUMNS, score_shards, score_split

# PrepareConfig fields that are TrainConfig settings (``data.<name>``); the others are fixed.
_PREPARE_SETTINGS = ("max_history", "split", "tail_days", "prior_rate", "item_prior_rate")


@dataclass
class TrainData:
    """The data of one run.

    Attributes:
        dataset: the source dataset, or for shards its stand-in (``root`` = the shard
            directory, ``fingerprint`` = the source dataset's, from the manifest).
        prepared: layout, vocabularies and config; for shards the frame is empty (the rows
            are in ``split_data``).
        shards: the manifest when training from prepared shards, else None.
    """

    dataset: Dataset
    prepared: Prepared
    shards: ShardManifest | None = None

    @property
    def source_dir(self) -> Path:
        """The dataset directory the rows come from (what ``run.json`` records with its
        fingerprint, so tracking and packaging find the dataset): for shards, the one the
        manifest names (it may be on another machine; packaging then says so)."""
        if self.shards is None:
            return self.dataset.root
        return Path(self.shards.dataset.get("dir") or self.shards.root)

    def train_loader(self, cfg: TrainConfig, env: DistEnv) -> BatchLoader | ShardStream:
        """The shuffled train batches of this rank."""
        common = {"batch_size": cfg.train.batch_size, "shuffle": True, "seed": cfg.train.seed,
                  "rank": env.rank, "world_size": env.world_size, "drop_last": env.world_size > 1}
        if self.shards is None:
            return BatchLoader(self.prepared, "train", **common)
        return ShardStream(self.shards, "train", block_rows=cfg.data.block_rows,
                           shuffle_buffer_rows=cfg.data.shuffle_buffer_rows, **common)

    def split_data(self, split: str) -> Prepared:
        """A ``Prepared`` with ``split``'s rows for predictions (``predictions_frame``): the
        whole prepared dataset, or for shards that split's keys and labels only."""
        if self.shards is None:
            return self.prepared
        return load_prepared(self.shards, (split,), prediction_columns(self.prepared.layout))

    def score(self, model: torch.nn.Module, split: str, batch_size: int,
              env: DistEnv) -> tuple[dict[str, np.ndarray] | None, float]:
        """``score_split`` of ``split``: in memory, or for shards read a chunk at a time, each
        rank its block of rows."""
        if self.shards is None:
            return score_split(model, self.prepared, split, batch_size, env.device, env.rank,
                               env.world_size)
        return score_shards(model, self.shards, split, batch_size, env.device, env.rank,
                            env.world_size)


def prediction_columns(layout: FeatureLayout) -> list[str]:
    """The shard columns ``predictions_frame`` reads: keys, labels, retention labels and counts."""
    retention = (*RETENTION_LABELS, *RETENTION_COUNTS) if layout.retention_labels else ()
    return [*KEY_COLUMNS, *layout.labels, *retention]


def open_train_data(cfg: TrainConfig) -> TrainData:
    """``cfg.data.dir`` as a dataset (prepared here) or as prepared shards (checked against
    ``cfg``).

    Raises:
        UsageError: shards prepared with other ``data.*`` settings, or a content preset on
            shards (the token cache needs the item media of the dataset directory).
    """
    if not is_shard_dir(cfg.data.dir):
        dataset = load_dataset(cfg.data.dir, allow_missing_media=cfg.data.allow_missing_media)
        return TrainData(dataset=dataset, prepared=prepare(dataset, cfg.prepare_config()))
    manifest = read_manifest(cfg.data.dir)
    changed = prepare_differences(manifest.prepare, cfg.prepare_config())
    if changed:
        raise UsageError(f"--data {cfg.data.dir}: the shards were prepared with other settings "
                         f"than the run's ({'; '.join(changed)}); --set the shards' values or "
                         "shard the dataset again with the run's (recsys data shard)")
    if cfg.content.enabled:
        raise UsageError(f"--data {cfg.data.dir}: content.enabled needs the items' images and "
                         "text, which prepared shards do not hold; train this config from the "
                         "dataset directory, or --set content.enabled=false")
    prepared = load_prepared(manifest, ())
    return TrainData(dataset=prepared.dataset, prepared=prepared, shards=manifest)


def prepare_differences(shards: PrepareConfig, run: PrepareConfig) -> list[str]:
    """The preparation settings where ``run`` departs from ``shards``, as
    ``"data.max_history: shards 50, run 20"`` (``prepare.<field>`` for fields no setting
    controls)."""
    a, b = shards.to_dict(), run.to_dict()
    return [f"{'data' if k in _PREPARE_SETTINGS else 'prepare'}.{k}: shards {a[k]!r}, run {b[k]!r}"
            for k in a if a[k] != b[k]]


def open_eval_shards(data_dir: str | Path, prepare: dict, vocabs: dict[str, Vocab]) -> ShardManifest:
    """Prepared shards for evaluating a run: they must have been prepared with the run's
    settings and encoded with its vocabularies (shards hold indices, not raw values)."""
    manifest = read_manifest(data_dir)
    changed = prepare_differences(manifest.prepare, PrepareConfig(**prepare))
    if changed:
        raise UsageError(f"--data {data_dir}: the shards were prepared with other settings than "
                         f"the run's ({'; '.join(changed)}); evaluate from the dataset directory")
    differ = sorted(n for n in vocabs.keys() | manifest.vocabs.keys()
                    if n not in vocabs or n not in manifest.vocabs
                    or vocabs[n].to_dict() != manifest.vocabs[n].to_dict())
    if differ:
        raise UsageError(f"--data {data_dir}: the shards were encoded with other vocabularies "
                         f"than the run's ({', '.join(differ)}); evaluate from the dataset "
                         "directory, which is encoded with the run's own")
    return manifest


def resume_source_difference(meta: dict, data_dir: str) -> str | None:
    """Why a run (its ``run.json``) cannot resume from ``data_dir``: it trained from prepared
    shards and ``data_dir`` is a dataset directory, or the other way round (the order of the
    batches depends on which). None when it can."""
    trained_on_shards = bool(meta.get("prepared_shards"))
    if trained_on_shards == is_shard_dir(data_dir):
        return None
    was = f"prepared shards ({meta['prepared_shards']})" if trained_on_shards else "a dataset directory"
    return (f"--resume: the run trained from {was}, --data {data_dir} is not; resume it from the "
            "data it trained on (the order of its batches depends on it)")
