"""``recsys export-embeddings``: every catalogue item's trained content embedding, cold items
included, and the ID embedding where the run trained one (issue 26, item 4)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import torch

from data.dataset import load_dataset
from data.loader import BatchLoader
from recsys.cli import main
from recsys.serving.encode import SERVE_SPLIT, encode_requests
from recsys.serving.mlflow_model import ensure_mlflow_model, package_dir
from recsys.serving.served import ServedModel
from recsys.serving.validate import validate_requests
from tests.recsys.serving.conftest import MODEL, Registry


def test_every_item_gets_the_content_embedding_the_ranker_reads(registry: Registry, world,
                                                                 tmp_path):
    out = tmp_path / "items.parquet"
    assert main(["export-embeddings", "--model", f"models:/{MODEL}/{registry.versions['em3']}",
                 "--tracking-uri", registry.uri, "--data", str(world), "--out", str(out),
                 "--quiet"]) == 0
    exported = pl.read_parquet(out)
    dataset = load_dataset(world)
    assert exported["item_id"].to_list() == dataset.items["item_id"].to_list()
    assert exported.schema["content"] == pl.Array(pl.Float32, 16)
    assert exported["content"].null_count() == 0

    served = ServedModel.load(package_dir(ensure_mlflow_model(registry.runs["em3"])))
    try:
        trained = (served.package.vocabs["item"].encode(dataset.items["item_id"]) > 0).to_numpy()
        # Items outside the training split (cold) have content but no ID row.
        assert (~trained).sum() > 0
        assert np.array_equal(exported["id_embedding"].is_null().to_numpy(), ~trained)

        # What the ranker reads for a target item is exactly the exported vectors.
        ids = dataset.items["item_id"]
        requests = pd.DataFrame({"user_id": 1, "item_id": ids.to_list(),
                                 "timestamp": 1_800_000_000, "device": "mobile"})
        prepared = encode_requests(validate_requests(pl.from_pandas(requests),
                                                     served.package.schema), served.package)
        batch = BatchLoader(prepared, SERVE_SPLIT, len(ids)).batch_at(np.arange(len(ids)))
        with torch.no_grad():
            seen = served.model(batch)
    finally:
        served.close()
    content = np.stack(exported["content"].to_numpy())
    np.testing.assert_allclose(seen.target_content.numpy(), content, rtol=0, atol=1e-5)
    id_rows = np.stack(exported["id_embedding"].filter(pl.Series(trained)).to_numpy())
    np.testing.assert_allclose(seen.target_item_emb.numpy()[trained], id_rows, rtol=0, atol=1e-6)


def test_a_model_without_content_exports_id_embeddings_only(registry: Registry, world, tmp_path):
    out = tmp_path / "items.parquet"
    assert main(["export-embeddings", "--model", str(registry.runs["id_only"]),
                 "--data", str(world), "--out", str(out), "--quiet"]) == 0
    exported = pl.read_parquet(out)
    assert exported.columns == ["item_id", "id_embedding"]
    assert exported.height == load_dataset(world).items.height
