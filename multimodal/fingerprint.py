"""Fingerprints that decide whether a token cache still matches its inputs.

- ``content_fingerprint(items)``: the item table rows in order (id, text, whether an image is
  present) and the bytes of every image. Interactions are left out on purpose: new
  interactions do not change item content, so they must not invalidate the cache. Paths are
  left out too, so moving the dataset directory keeps the cache valid.
- ``encoder_descriptor(source)``: what identifies an encoder's weights (preset name, hub id,
  or a hash of a local model directory / vector file).
- ``settings_hash(settings)``: the short hash naming a cache directory.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import polars as pl

from multimodal.encoders import EncoderSource

_CHUNK = 1 << 20


def _hash_file(h: Any, path: Path) -> None:
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)


def content_fingerprint(items: pl.DataFrame) -> str:
    """Hash of the canonical item table's content (``item_id``, ``text``, ``image`` files).

    An image that cannot be read hashes as missing, matching how the cache treats it.
    """
    h = hashlib.blake2b(digest_size=16)
    h.update(f"items={items.height}".encode())
    for item_id, text, image in items.select("item_id", "text", "image").iter_rows():
        h.update(json.dumps([item_id, text, image is not None]).encode())
        if image is not None:
            try:
                _hash_file(h, Path(image))
            except OSError:
                h.update(b"<unreadable>")
    return h.hexdigest()


def path_fingerprint(path: Path) -> str:
    """Hash of a file, or of every file (relative name + bytes) under a directory."""
    h = hashlib.blake2b(digest_size=16)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        h.update(str(f.relative_to(path) if f != path else f.name).encode())
        _hash_file(h, f)
    return h.hexdigest()


def encoder_descriptor(source: EncoderSource) -> dict[str, str]:
    """Identity of an encoder for the cache settings: kind, name and (for files) a content hash.

    A hub id is identified by its name alone (weights of a hub revision do not change).
    """
    desc = {"kind": source.kind, "name": source.name}
    if source.kind in ("local", "vectors"):
        desc["content"] = path_fingerprint(Path(source.name))
    return desc


def settings_hash(settings: dict[str, Any]) -> str:
    """12 hex characters naming the cache directory of these encoder settings."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
