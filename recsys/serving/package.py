"""The serving package: everything a served model reads, as plain files in one folder.

It is the ``package`` artifact of the MLflow Model (``artifacts/package/``) and is written by
``recsys.serving.package_build``::

    package.json        what it is: run, checkpoint, snapshot time, heads, request schema
    config.toml         the run's config (model shape, content settings, batch size)
    data_state.json     the run's vocabularies and feature layout (recsys.runs.run_artifacts)
    dataset.toml        the dataset's contract (column names of context and user features)
    weights/step_N/     the best weights as a DCP checkpoint without optimizer state
    tokens.safetensors  the item token table (content runs only), one row per catalogue item
    items.parquet       the catalogue: item ids, item categoricals, item counts
    users.parquet       the user state as of the log's end (docs/serving.md, "State")

Nothing here runs code from the folder: JSON, TOML, Parquet and safetensors are data, and the
weights load through ``ranking.checkpoint`` (tensors only). Every file is read from inside the
folder (a link leading out is refused).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import torch

from data.batch import FeatureLayout
from data.dataset import Dataset
from data.spec import DatasetSpec, parse_spec
from data.vocab import Vocab
from multimodal.tokens import TokenTensors
from recsys.config import TrainConfig, load_run_config
from recsys.errors import UsageError
from recsys.runs.run_artifacts import DATA_STATE, load_data_state
from recsys.serving.schema import RequestSchema

FORMAT = 1
INFO = "package.json"
CONFIG = "config.toml"
SPEC = "dataset.toml"
WEIGHTS = "weights"
TOKENS = "tokens.safetensors"
ITEMS = "items.parquet"
USERS = "users.parquet"
TOKEN_TENSORS = ("vision", "vision_mask", "text", "text_mask")


def inside(root: Path, name: str) -> Path:
    """``root/name``, refused when it resolves outside ``root`` (a planted link)."""
    path = (root / name).resolve()
    if not path.is_relative_to(root.resolve()):
        raise UsageError(f"{root / name}: refused, it leads outside the model folder {root}")
    return path


@dataclass
class Package:
    """A serving package read from its folder.

    Attributes:
        root: the folder.
        info: ``package.json``.
        cfg: the run's config.
        layout, vocabs, prep: the run's data state (``recsys.runs.run_artifacts``).
        spec: the dataset's contract.
        catalogue: the items (``item_row`` 0..N-1 in token-table order, then row N, the
            no-content row that items outside the catalogue read) with their counts, as a
            ``Dataset`` whose interactions are empty: what ``Prepared`` needs to map history
            rows to item IDs.
        users: the user state (``recsys.serving.snapshot.user_state``).
        schema: the request schema.
    """

    root: Path
    info: dict[str, Any]
    cfg: TrainConfig
    layout: FeatureLayout
    vocabs: dict[str, Vocab]
    prep: dict[str, Any]
    spec: DatasetSpec
    catalogue: Dataset
    users: pl.DataFrame
    schema: RequestSchema

    @property
    def heads(self) -> tuple[str, ...]:
        return tuple(self.info["heads"])

    @property
    def weights(self) -> Path:
        return inside(self.root, WEIGHTS)

    @property
    def unknown_item_row(self) -> int:
        """The item-table row of an item outside the catalogue: no tokens, no ID row."""
        return self.catalogue.items.height - 1

    def tokens(self) -> TokenTensors | None:
        """The token table with the no-content row appended (N + 1 rows), or None for a run
        without content."""
        if not self.cfg.content.enabled:
            return None
        from safetensors.torch import load_file

        t = load_file(str(inside(self.root, TOKENS)))
        if set(t) != set(TOKEN_TENSORS):
            raise UsageError(f"{self.root / TOKENS}: expected tensors {TOKEN_TENSORS}, "
                             f"found {sorted(t)}")
        # All-False masks: an item with neither image nor text (docs/design.md §2.1).
        return TokenTensors(*(torch.cat([t[k], t[k].new_zeros((1, *t[k].shape[1:]))])
                              for k in TOKEN_TENSORS))


def read_package(root: str | Path) -> Package:
    """Reads the package in ``root``.

    Raises:
        UsageError: not a package, or one of another format.
    """
    root = Path(root)
    if not (root / INFO).is_file():
        raise UsageError(f"{root}: not a serving package (no {INFO})")
    info = json.loads(inside(root, INFO).read_text(encoding="utf-8"))
    if info.get("format") != FORMAT:
        raise UsageError(f"{root}: serving package format {info.get('format')!r}; this recsys "
                         f"reads format {FORMAT}")
    cfg = load_run_config(inside(root, CONFIG))
    inside(root, DATA_STATE)
    layout, vocabs, prep = load_data_state(root)
    spec = parse_spec(inside(root, SPEC).read_text(encoding="utf-8"))
    items = pl.read_parquet(inside(root, ITEMS))
    unknown = pl.DataFrame({"item_id": [None]}, schema={"item_id": items.schema["item_id"]})
    items = pl.concat([items, unknown], how="diagonal_relaxed").with_row_index(
        "item_row").with_columns(pl.col("item_row").cast(pl.Int64))
    catalogue = Dataset(root=root, spec=spec, interactions=pl.DataFrame(), items=items,
                        users=None, fingerprint=str(info.get("dataset_fingerprint")),
                        missing_media=[])
    users = pl.read_parquet(inside(root, USERS))
    return Package(root, info, cfg, layout, vocabs, prep, spec, catalogue, users,
                   RequestSchema.from_dict(info["request"]))
