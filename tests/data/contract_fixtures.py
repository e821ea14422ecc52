"""A tiny valid contract dataset, written by hand, that tests mutate into malformed ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image

SPEC = """name = "tiny"

[interactions]
file = "interactions.parquet"
user = "uid"
item = "iid"
timestamp = "ts"
labels = ["click", "like"]
categorical = ["device"]

[items]
file = "items.parquet"
id = "iid"
text = ["title"]
image = "img"
categorical = ["brand"]

[users]
file = "users.parquet"
id = "uid"
categorical = ["region"]
"""


def tiny_tables() -> dict[str, pl.DataFrame]:
    rng = np.random.default_rng(0)
    n = 40
    click = rng.integers(0, 2, n)
    inter = pl.DataFrame({
        "uid": rng.integers(1, 6, n),
        "iid": rng.integers(1, 9, n),
        "ts": 1_700_000_000 + np.sort(rng.integers(0, 30 * 86400, n)),
        "click": click,
        "like": click * rng.integers(0, 2, n),
        "device": rng.choice(["ios", "android"], n),
    })
    items = pl.DataFrame({
        "iid": list(range(1, 9)),
        "title": [f"item number {i}" for i in range(1, 9)],
        "img": [f"images/{i}.png" if i != 8 else None for i in range(1, 9)],
        "brand": ["a", "b"] * 4,
    })
    users = pl.DataFrame({"uid": list(range(1, 6)), "region": ["n", "s", "e", "w", "n"]})
    return {"interactions": inter, "items": items, "users": users}


def write_dataset(root: Path, tables: dict[str, pl.DataFrame] | None = None, spec: str = SPEC,
                  images: bool = True) -> Path:
    """Writes the tiny dataset (optionally with replaced tables or spec) and returns its dir."""
    tables = tables or tiny_tables()
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.toml").write_text(spec)
    for name, df in tables.items():
        df.write_parquet(root / f"{name}.parquet")
    if images:
        (root / "images").mkdir(exist_ok=True)
        for i in range(1, 8):
            Image.new("RGB", (8, 8), (i * 30, 0, 0)).save(root / "images" / f"{i}.png")
    return root
