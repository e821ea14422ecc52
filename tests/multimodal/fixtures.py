"""Shared helpers of the multimodal tests: a tiny contract dataset written on the spot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image

ITEMS = 7  # item 3 has no image, item 5 has no text


def write_dataset(root: Path, n_items: int = ITEMS) -> Path:
    """Writes dataset.toml, items/interactions Parquet and PNG posters under ``root``.

    Item ``3`` has no image (null path) and item ``5`` no text (null title and genres).
    """
    root.mkdir(parents=True, exist_ok=True)
    (root / "img").mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    posters: list[str | None] = []
    for i in range(n_items):
        if i == 3:
            posters.append(None)
            continue
        # Different sizes and one RGBA image exercise resize, crop and alpha flattening.
        h, w = 24 + 4 * i, 40 - 2 * i
        mode_channels = 4 if i == 1 else 3
        pixels = rng.integers(0, 256, size=(h, w, mode_channels), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "img" / f"{i}.png")
        posters.append(f"img/{i}.png")
    titles = [None if i == 5 else f"Item number {i}" for i in range(n_items)]
    genres = [None if i == 5 else ("drama" if i % 2 else "comedy, action") for i in range(n_items)]
    pl.DataFrame({"item_id": list(range(100, 100 + n_items)), "title": titles, "genres": genres,
                  "poster": posters}).write_parquet(root / "items.parquet")
    users = [u for u in range(4) for _ in range(3)]
    pl.DataFrame({"user_id": users, "item_id": [100 + (u * 3 + k) % n_items for u, k in
                                                 zip(users, [0, 1, 2] * 4, strict=True)],
                  "timestamp": list(range(1_000, 1_000 + len(users))),
                  "click": [1, 0, 1] * 4}).write_parquet(root / "interactions.parquet")
    (root / "dataset.toml").write_text(
        'name = "tiny-mm"\n\n[interactions]\nfile = "interactions.parquet"\nuser = "user_id"\n'
        'item = "item_id"\ntimestamp = "timestamp"\nlabels = ["click"]\n\n[items]\n'
        'file = "items.parquet"\nid = "item_id"\ntext = ["title", "genres"]\nimage = "poster"\n'
    )
    return root
