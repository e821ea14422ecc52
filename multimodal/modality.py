"""Per-modality token producers used while building a token cache.

Each producer turns a slice of the canonical item table into fp16 token features and a mask:
``encode(items) -> (tokens n x T x D float16, mask n x T bool)``. An item without the
modality (null image or text, unreadable image when allowed, no precomputed vector) gets an
all-False mask row and zero tokens: the mask, not the zeros, says "missing".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import polars as pl

from data.errors import DataError, Problem
from multimodal.encoders import EncoderSource, FrozenTextEncoder, FrozenVisionEncoder
from multimodal.precomputed import load_vectors
from multimodal.preprocess import load_rgb

FP16_MAX = float(np.finfo(np.float16).max)


def to_fp16(x: np.ndarray) -> np.ndarray:
    # Clip rather than overflow: one inf in a cached token would poison every query reading it.
    return np.clip(x, -FP16_MAX, FP16_MAX).astype(np.float16)


class TokenProducer(Protocol):
    name: str
    dim: int
    tokens: int

    def encode(self, items: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass
class ImageTokens:
    """Vision-tower tokens of the items' images (column ``image``: absolute path or null)."""

    encoder: FrozenVisionEncoder
    max_tokens: int | None
    allow_missing_media: bool = False
    name: str = field(init=False)
    dim: int = field(init=False)
    tokens: int = field(init=False)
    unreadable: list[Problem] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.name, self.dim = self.encoder.name, self.encoder.dim
        self.tokens = self.encoder.num_tokens(self.max_tokens)

    def encode(self, items: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        n = items.height
        out = np.zeros((n, self.tokens, self.dim), dtype=np.float16)
        mask = np.zeros((n, self.tokens), dtype=bool)
        images, where = [], []
        for i, (row, path) in enumerate(items.select("item_row", "image").iter_rows()):
            if path is None:
                continue
            try:
                images.append(load_rgb(path))
                where.append(i)
            except (OSError, ValueError, SyntaxError) as exc:  # what PIL raises for broken files
                problem = Problem(path, f"unreadable image ({type(exc).__name__}); pass "
                                  "--allow-missing-media to encode the item without it",
                                  column="image", row=int(row) + 1)
                if not self.allow_missing_media:
                    raise DataError(problem) from exc
                self.unreadable.append(problem)
        if images:
            out[where] = to_fp16(self.encoder.encode(images, self.max_tokens).numpy())
            mask[where] = True
        return out, mask


@dataclass
class TextTokens:
    """Text-encoder tokens of the items' text (column ``text``: string or null)."""

    encoder: FrozenTextEncoder
    max_tokens: int | None
    name: str = field(init=False)
    dim: int = field(init=False)
    tokens: int = field(init=False)

    def __post_init__(self) -> None:
        self.name, self.dim = self.encoder.name, self.encoder.dim
        self.tokens = self.encoder.num_tokens(self.max_tokens)

    def encode(self, items: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        n = items.height
        out = np.zeros((n, self.tokens, self.dim), dtype=np.float16)
        mask = np.zeros((n, self.tokens), dtype=bool)
        texts = items["text"].to_list()
        where = [i for i, t in enumerate(texts) if t is not None]
        if where:
            hidden, attn = self.encoder.encode([texts[i] for i in where], self.max_tokens)
            attn_np = attn.numpy()
            # Padding positions are masked and stored as zeros.
            out[where] = to_fp16(hidden.numpy() * attn_np[..., None])
            mask[where] = attn_np
        return out, mask


@dataclass
class VectorTokens:
    """Precomputed vectors as length-1 token sequences (see ``multimodal.precomputed``)."""

    source: EncoderSource
    all_items: pl.DataFrame
    name: str = field(init=False)
    dim: int = field(init=False)
    tokens: int = 1

    def __post_init__(self) -> None:
        self.name = self.source.name
        vectors, present = load_vectors(self.source.name, self.all_items["item_id"])
        self._vectors, self._present = to_fp16(vectors), present
        self.dim = int(vectors.shape[1])

    def encode(self, items: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        rows = items["item_row"].to_numpy()
        return self._vectors[rows][:, None, :], self._present[rows][:, None]
