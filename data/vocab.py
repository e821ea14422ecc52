"""Vocabularies for ID-like features: built on the train split, index 0 is out-of-vocabulary."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

OOV_INDEX = 0


@dataclass
class Vocab:
    """Maps raw values of one feature to dense indices 1..n; anything unseen maps to 0 (OOV).

    ``values`` holds the known raw values in index order (``values[i]`` has index ``i + 1``).
    """

    name: str
    values: pl.Series

    @classmethod
    def build(cls, name: str, column: pl.Series, min_count: int = 1) -> Vocab:
        counts = column.drop_nulls().value_counts()
        keep = counts.filter(pl.col("count") >= min_count)[column.name]
        return cls(name=name, values=keep.sort().rename("value"))

    @property
    def size(self) -> int:
        """Number of embedding rows, OOV row included."""
        return len(self.values) + 1

    def encode(self, column: pl.Series) -> pl.Series:
        """Raw values → Int64 indices (unseen or null → OOV_INDEX)."""
        lookup = pl.DataFrame({"value": self.values, "index": pl.int_range(1, self.size, eager=True)})
        joined = (
            column.cast(self.values.dtype, strict=False).rename("value").to_frame()
            .join(lookup, on="value", how="left", maintain_order="left")
        )
        return joined["index"].fill_null(OOV_INDEX).cast(pl.Int64).rename(column.name)

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": str(self.values.dtype), "values": self.values.to_list()}

    @classmethod
    def from_dict(cls, d: dict) -> Vocab:
        dtype = pl.Int64 if d["dtype"].startswith(("Int", "UInt")) else pl.String
        return cls(name=d["name"], values=pl.Series("value", d["values"], dtype=dtype))
