"""Item embeddings out (``recsys export-embeddings``): the trained content embedding of every item
of a catalogue, and the item ID embedding where the run has one.

The content embedding is what the ranking model reads for a target item (the Fusion-Q-Former's
pooled output with its base weights, or the frozen-content projection): it exists for every
item with media, including items no one has interacted with, which is the point of content.
An item outside the run's training vocabulary has no trained ID row: its ``id_embedding`` is
null (the model reads the learned unknown-item vector there, docs/design.md §2.3).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import polars as pl
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from data.batch import HISTORY_FEATURE, ITEM_FEATURE
from data.dataset import load_dataset
from data.vocab import OOV_INDEX
from recsys.errors import UsageError
from recsys.model.build import apply_threads, autocast, build_model, em3_of
from recsys.model.content_setup import load_item_tokens
from recsys.model.em3 import EM3Model
from recsys.serving.package import Package
from recsys.serving.world import world_of_one

CHUNK = 4096  # items per forward pass


def export_embeddings(package: Package, data_dir: str | Path, out: str | Path,
                      progress: bool = True) -> dict[str, int | None]:
    """Writes ``out`` (Parquet): ``item_id``, ``content`` (d floats, or absent for a model
    without content) and ``id_embedding`` (D floats, null where the item has no trained ID
    row), one row per item of ``data_dir``'s item table, in its order.

    Returns a summary: items, with_id, content_dim, id_dim.

    Raises:
        UsageError: ``out`` is not a .parquet file, or the data's item ids are of another kind
            than the run's.
        DataError: the dataset breaks the contract.
    """
    out = Path(out)
    if out.suffix.lower() != ".parquet":
        raise UsageError(f"--out {out}: name a .parquet file")
    cfg = package.cfg
    dataset = load_dataset(data_dir, allow_missing_media=cfg.data.allow_missing_media)
    item_ids = dataset.items["item_id"]
    if item_ids.dtype.is_integer() != package.schema.item_ids_integer:
        raise UsageError(f"{data_dir}: item ids are {item_ids.dtype}, the run's are "
                         f"{'integers' if package.schema.item_ids_integer else 'strings'}")
    index = package.vocabs[ITEM_FEATURE].encode(item_ids).to_numpy()
    with world_of_one() as env:
        apply_threads(cfg)
        # The data's own token table (built once if missing, as for recsys evaluate), so items
        # added to the catalogue after training get their content too.
        tokens = load_item_tokens(cfg, dataset, env, progress=progress) if cfg.content.enabled else None
        model = build_model(cfg, package.layout, tokens, env, checkpoint=package.weights)
        model.eval()
        em3 = em3_of(model)
        with torch.no_grad(), autocast(env.device):
            content = _content(em3, len(item_ids), env.device) if em3.content is not None else None
            ids = _id_rows(em3, index, env.device)
    has_id = index != OOV_INDEX
    columns = [item_ids.alias("item_id")]
    if content is not None:
        columns.append(pl.Series("content", content))
    columns.append(pl.Series("id_embedding", ids))
    frame = pl.DataFrame(columns).with_columns(
        pl.when(pl.Series(has_id)).then(pl.col("id_embedding")).alias("id_embedding"))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        frame.write_parquet(tmp)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return {"items": len(item_ids), "with_id": int(has_id.sum()),
            "content_dim": None if content is None else int(content.shape[1]),
            "id_dim": int(ids.shape[1])}


def _content(em3: EM3Model, n: int, device: torch.device) -> np.ndarray:
    """N x d float32: every item row's target content embedding."""
    parts = [em3.content.encode_targets(torch.arange(s, min(s + CHUNK, n), device=device)).float().cpu()
             for s in range(0, n, CHUNK)]
    return torch.cat(parts).numpy() if parts else np.zeros((0, em3.content.hidden), np.float32)


def _id_rows(em3: EM3Model, index: np.ndarray, device: torch.device) -> np.ndarray:
    """N x D float32: the item table's rows ``index`` (OOV rows included, masked by the caller),
    looked up through the (sharded) table as the model's forward does."""
    parts = []
    for s in range(0, len(index), CHUNK):
        rows = torch.from_numpy(index[s:s + CHUNK].astype(np.int64))
        b = len(rows)
        kjt = KeyedJaggedTensor(keys=[ITEM_FEATURE, HISTORY_FEATURE], values=rows,
                                lengths=torch.cat([torch.ones(b, dtype=torch.int32),
                                                   torch.zeros(b, dtype=torch.int32)]),
                                stride=b).to(device)
        parts.append(em3.ranking.sparse_arch.ec(kjt)[ITEM_FEATURE].values().float().cpu())
    dim = em3.ranking.sparse_arch.unknown_item.weight.shape[0]
    return torch.cat(parts).numpy() if parts else np.zeros((0, dim), np.float32)
