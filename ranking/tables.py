"""Embedding table configs derived from the dataset's vocabularies (a ``FeatureLayout``).

One table per pooled feature (``user``, ``user_<c>``, ``item_<c>``, ``ctx_<c>``; a
multi-valued one mean- or sum-pools its bag) in an ``EmbeddingBagCollection``, and one item table shared by the target ``item`` and the behaviour
sequence ``hist_item`` in an ``EmbeddingCollection`` (the history needs per-position vectors,
not a pooled sum).

Table names are ``table_<feature>``: a table name becomes a key of an ``nn.ModuleDict``, and a
bare feature name such as ``items``, ``keys`` or ``values`` would clash with a ``ModuleDict``
method and fail deep inside TorchRec.
"""

from __future__ import annotations

import re

from torchrec.modules.embedding_configs import EmbeddingBagConfig, EmbeddingConfig, PoolingType

from data.batch import HISTORY_FEATURE, ITEM_FEATURE, FeatureLayout
from ranking.config import ConfigError

TABLE_PREFIX = "table_"
ITEM_TABLE = TABLE_PREFIX + ITEM_FEATURE
_UNSAFE = re.compile(r"[^0-9A-Za-z_]")


def table_name(feature: str) -> str:
    """``user_age`` → ``table_user_age``; characters ``nn.Module`` names forbid become ``_``."""
    return TABLE_PREFIX + _UNSAFE.sub("_", feature)


def pooled_table_configs(layout: FeatureLayout, embedding_dim: int,
                         bag_pooling: str = "mean") -> list[EmbeddingBagConfig]:
    """One table per pooled feature: a multi-valued feature (``layout.bags``) pools its bag
    with ``bag_pooling`` ("mean" or "sum"); a single-valued one has bags of length 1, where
    sum pooling is a plain lookup."""
    poolings = {"mean": PoolingType.MEAN, "sum": PoolingType.SUM}
    if bag_pooling not in poolings:
        raise ValueError(f"bag_pooling must be one of {sorted(poolings)}, got {bag_pooling!r}")
    configs = []
    seen: dict[str, str] = {}
    for feature, vocab_size in layout.pooled.items():
        name = table_name(feature)
        if name in seen or name == ITEM_TABLE:
            raise ValueError(
                f"pooled features {seen.get(name, ITEM_FEATURE)!r} and {feature!r} map to the "
                f"same table name {name!r}"
            )
        seen[name] = feature
        if vocab_size < 1:
            raise ValueError(f"vocabulary of {feature!r} has {vocab_size} rows; need >= 1 (OOV)")
        configs.append(
            EmbeddingBagConfig(
                name=name,
                embedding_dim=embedding_dim,
                num_embeddings=int(vocab_size),
                feature_names=[feature],
                pooling=poolings[bag_pooling] if feature in layout.bags else PoolingType.SUM,
            )
        )
    return configs


def sequence_table_configs(layout: FeatureLayout, embedding_dim: int) -> list[EmbeddingConfig]:
    """The item table, shared by the target item and every history position."""
    if layout.item_vocab_size < 1:
        raise ValueError(f"item_vocab_size must be >= 1, got {layout.item_vocab_size}")
    return [
        EmbeddingConfig(
            name=ITEM_TABLE,
            embedding_dim=embedding_dim,
            num_embeddings=int(layout.item_vocab_size),
            feature_names=[ITEM_FEATURE, HISTORY_FEATURE],
        )
    ]


def table_names(layout: FeatureLayout) -> list[str]:
    """Every table of the model: pooled tables in layout order, then the item table."""
    return [table_name(f) for f in layout.pooled] + [ITEM_TABLE]


def resolve_table(key: str, names: list[str]) -> str:
    """Maps a config key (a table name or a feature name) to the table name; unknown is an error."""
    if key in names:
        return key
    if table_name(key) in names:
        return table_name(key)
    raise ConfigError(f"table_sharding names unknown table {key!r}; tables are {names}")


def table_rows(layout: FeatureLayout, embedding_dim: int) -> dict[str, tuple[int, int]]:
    """Table name → (rows, dim), for memory estimates and reports."""
    shapes = {c.name: (c.num_embeddings, c.embedding_dim)
              for c in pooled_table_configs(layout, embedding_dim)}
    shapes.update({c.name: (c.num_embeddings, c.embedding_dim)
                   for c in sequence_table_configs(layout, embedding_dim)})
    return shapes
