"""Vocabularies for ID-like features: built on the train split, index 0 is out-of-vocabulary.

A multi-valued feature (a ``List`` column, ``data.bags``) has one vocabulary over the values of
all its bags; encoding maps every element and keeps each bag's length (an empty bag stays
empty, it is not one OOV value).
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

OOV_INDEX = 0


def value_counts(column: pl.Series) -> pl.DataFrame:
    """``value`` (each distinct non-null value of ``column``, the elements of a bag column) and
    its ``count`` (Int64): what ``Vocab.build`` keeps or drops by ``min_count``."""
    if isinstance(column.dtype, pl.List):
        column = column.explode(empty_as_null=False, keep_nulls=False)
    counts = column.drop_nulls().rename("value").value_counts()
    return counts.with_columns(pl.col("count").cast(pl.Int64))


@dataclass
class Vocab:
    """Maps raw values of one feature to dense indices 1..n; anything unseen maps to 0 (OOV).

    ``values`` holds the known raw values in index order (``values[i]`` has index ``i + 1``).
    """

    name: str
    values: pl.Series

    @classmethod
    def build(cls, name: str, column: pl.Series, min_count: int = 1) -> Vocab:
        return cls.from_counts(name, value_counts(column), min_count)

    @classmethod
    def from_counts(cls, name: str, counts: pl.DataFrame, min_count: int = 1) -> Vocab:
        """The vocabulary of ``counts`` (``value``, ``count``: ``value_counts``, possibly summed
        over parts of the train rows): values seen at least ``min_count`` times, sorted."""
        keep = counts.filter(pl.col("count") >= min_count)["value"]
        return cls(name=name, values=keep.sort())

    @property
    def size(self) -> int:
        """Number of embedding rows, OOV row included."""
        return len(self.values) + 1

    def encode(self, column: pl.Series) -> pl.Series:
        """Raw values → Int64 indices (unseen or null → OOV_INDEX); a List column → a
        ``List(Int64)`` column of the same bag lengths (a null bag → an empty one)."""
        if isinstance(column.dtype, pl.List):
            return self._encode_bags(column)
        lookup = pl.DataFrame({"value": self.values, "index": pl.int_range(1, self.size, eager=True)})
        joined = (
            column.cast(self.values.dtype, strict=False).rename("value").to_frame()
            .join(lookup, on="value", how="left", maintain_order="left")
        )
        return joined["index"].fill_null(OOV_INDEX).cast(pl.Int64).rename(column.name)

    def _encode_bags(self, column: pl.Series) -> pl.Series:
        # replace_strict inside list.eval maps every element in one vectorised pass.
        encoded = column.list.eval(pl.element().cast(self.values.dtype, strict=False).replace_strict(
            self.values, pl.int_range(1, self.size, eager=True), default=OOV_INDEX, return_dtype=pl.Int64))
        return encoded.fill_null(pl.Series([[]], dtype=pl.List(pl.Int64))).rename(column.name)

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": str(self.values.dtype), "values": self.values.to_list()}

    @classmethod
    def from_dict(cls, d: dict) -> Vocab:
        dtype = pl.Int64 if d["dtype"].startswith(("Int", "UInt")) else pl.String
        return cls(name=d["name"], values=pl.Series("value", d["values"], dtype=dtype))
