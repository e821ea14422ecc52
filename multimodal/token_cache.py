"""The token cache: every item encoded once by the frozen encoders, stored fp16 and memory-mapped.

Layout of a cache directory (default ``<DATA_DIR>/.cache/tokens-<settings hash>/``)::

    manifest.json        encoders, dims, token counts, fingerprints, status
    vision.f16           N x Tv x Dv  float16, row i = item_row i
    vision_mask.bool     N x Tv       bool (all False = no image)
    text.f16             N x Tt x Dt  float16
    text_mask.bool       N x Tt       bool (all False = no text)
    done.bool            N            bool, items already encoded (what a resumed build skips)

A build writes the manifest first (``status: building``) and marks items done only after their
rows are flushed, so an interrupted build resumes where it stopped. ``TokenCache.open`` refuses
an incomplete cache, and one whose encoder settings or item/media fingerprint differ from what
the caller expects, with a message naming the mismatch.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from data.dataset import Dataset, load_dataset
from data.errors import DataError, Problem
from multimodal.encoders import (
    EncoderError,
    load_text_encoder,
    load_vision_encoder,
    resolve_source,
)
from multimodal.fingerprint import content_fingerprint, encoder_descriptor, settings_hash
from multimodal.modality import ImageTokens, TextTokens, TokenProducer, VectorTokens
from multimodal.tokens import TokenTensors

FORMAT = 1
DEFAULT_TOKENS = 32
MANIFEST = "manifest.json"
DONE = "done.bool"
LOCK = ".lock"
FILES = {"vision": "vision.f16", "vision_mask": "vision_mask.bool",
         "text": "text.f16", "text_mask": "text_mask.bool"}


def cache_settings(vision: str = "tiny", text: str = "tiny", tokens: int | None = DEFAULT_TOKENS) -> dict:
    """What a cache's content depends on besides the items: encoders and the token budget."""
    if tokens is not None and tokens < 1:
        raise EncoderError(f"tokens must be >= 1, got {tokens}")
    return {"format": FORMAT, "vision": encoder_descriptor(resolve_source(vision)),
            "text": encoder_descriptor(resolve_source(text)), "tokens": tokens}


def default_cache_dir(data_dir: str | Path, vision: str = "tiny", text: str = "tiny",
                      tokens: int | None = DEFAULT_TOKENS) -> Path:
    """``<DATA_DIR>/.cache/tokens-<hash of encoder settings>/``."""
    return Path(data_dir) / ".cache" / f"tokens-{settings_hash(cache_settings(vision, text, tokens))}"


def _describe(desc: dict) -> str:
    content = f" (content {desc['content'][:8]})" if "content" in desc else ""
    return f"{desc['kind']} '{desc['name']}'{content}"


def _mismatches(manifest: dict, settings: dict | None, fingerprint: str | None) -> list[str]:
    """One message per difference between a manifest and the expected settings/fingerprint."""
    out = []
    if manifest.get("format") != FORMAT:
        out.append(f"cache format {manifest.get('format')}, this version reads {FORMAT}")
        return out
    if settings is not None:
        built = manifest["settings"]
        for key in ("vision", "text"):
            if built[key] != settings[key]:
                out.append(f"{key} encoder: cache has {_describe(built[key])}, "
                           f"expected {_describe(settings[key])}")
        if built["tokens"] != settings["tokens"]:
            out.append(f"token budget: cache has {built['tokens']}, expected {settings['tokens']}")
    if fingerprint is not None and manifest["fingerprint"] != fingerprint:
        out.append(f"item table/media fingerprint: cache has {manifest['fingerprint']}, the dataset "
                   f"now has {fingerprint} (items, texts or images changed since it was built)")
    return out


def _read_manifest(directory: Path) -> dict | None:
    path = directory / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(Problem(str(path), f"corrupt manifest: {exc}")) from exc


def _write_manifest(directory: Path, manifest: dict) -> None:
    tmp = directory / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(directory / MANIFEST)


def _shapes(manifest: dict) -> dict[str, tuple[int, ...]]:
    n, v, t = manifest["num_items"], manifest["vision"], manifest["text"]
    return {"vision": (n, v["tokens"], v["dim"]), "vision_mask": (n, v["tokens"]),
            "text": (n, t["tokens"], t["dim"]), "text_mask": (n, t["tokens"]), "done": (n,)}


def _producers(dataset: Dataset, vision: str, text: str, tokens: int | None,
               allow_missing_media: bool) -> tuple[TokenProducer, TokenProducer]:
    vs, ts = resolve_source(vision), resolve_source(text)
    v = (VectorTokens(vs, dataset.items) if vs.kind == "vectors"
         else ImageTokens(load_vision_encoder(vision), tokens, allow_missing_media))
    t = (VectorTokens(ts, dataset.items) if ts.kind == "vectors"
         else TextTokens(load_text_encoder(text), tokens))
    return v, t


@contextmanager
def _build_lock(directory: Path, progress: bool) -> Iterator[None]:
    """Holds ``directory/.lock`` exclusively while a cache is built there.

    Two processes building the same cache (two trainings started at once on one dataset)
    would otherwise both create the files, the second truncating rows the first had written
    and marked done; with the lock the second waits and then finds the cache complete.
    """
    with open(directory / LOCK, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if progress:
                print(f"waiting for another process to finish the token cache {directory}",
                      flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_token_cache(dataset_or_dir: Dataset | str | Path, out_dir: str | Path | None = None,
                      vision: str = "tiny", text: str = "tiny", tokens: int | None = DEFAULT_TOKENS,
                      batch_size: int = 64, progress: bool = True, allow_missing_media: bool = False,
                      overwrite: bool = False,
                      on_batch: Callable[[int, int], None] | None = None) -> Path:
    """Encodes every item once and stores its token features; returns the cache directory.

    Args:
        dataset_or_dir: a loaded ``Dataset`` or a contract dataset directory.
        out_dir: cache directory; default ``default_cache_dir(dataset.root, vision, text, tokens)``.
        vision, text: encoder names (``tiny``, local directory, hub id, or a vector file).
        tokens: token budget per modality (text padded/truncated to it, the vision patch grid
            pooled to fit it); None keeps every token.
        batch_size: items per encoder batch (also the unit of resumable progress).
        progress: show a tqdm progress bar.
        allow_missing_media: an unreadable image makes its item image-less instead of an error.
        overwrite: replace an existing cache built with other settings or for other items.
        on_batch: called with (items encoded so far, total) after every flushed batch.

    An existing complete cache with the same settings and fingerprint is returned as is; an
    incomplete one resumes.

    Raises:
        DataError: bad dataset, unreadable media, or an existing cache that does not match
            (unless ``overwrite``).
    """
    if batch_size < 1:
        raise EncoderError(f"batch_size must be >= 1, got {batch_size}")
    dataset = (dataset_or_dir if isinstance(dataset_or_dir, Dataset)
               else load_dataset(dataset_or_dir, allow_missing_media=allow_missing_media))
    if dataset.items.height == 0:
        raise DataError(Problem(str(dataset.root), "the item table is empty"))
    settings = cache_settings(vision, text, tokens)
    out = Path(out_dir) if out_dir is not None else default_cache_dir(dataset.root, vision, text, tokens)
    out.mkdir(parents=True, exist_ok=True)
    with _build_lock(out, progress):
        return _build_locked(dataset, out, settings, vision, text, tokens, batch_size, progress,
                             allow_missing_media, overwrite, on_batch)


def _build_locked(dataset: Dataset, out: Path, settings: dict, vision: str, text: str,
                  tokens: int | None, batch_size: int, progress: bool, allow_missing_media: bool,
                  overwrite: bool, on_batch: Callable[[int, int], None] | None) -> Path:
    """``build_token_cache`` with the directory's lock held."""
    items = dataset.items
    n = items.height
    fingerprint = content_fingerprint(items)

    manifest = _read_manifest(out)
    if manifest is not None:
        problems = _mismatches(manifest, settings, fingerprint)
        if problems and not overwrite:
            raise DataError([Problem(str(out / MANIFEST), f"existing token cache does not match: {p}; "
                                     "pass --force (overwrite=True) to rebuild it") for p in problems])
        if problems:
            for name in [MANIFEST, DONE, *FILES.values()]:
                (out / name).unlink(missing_ok=True)
            manifest = None
        elif manifest["status"] == "complete":
            return out

    producers = dict(zip(("vision", "text"), _producers(dataset, vision, text, tokens,
                                                        allow_missing_media), strict=True))
    fresh = manifest is None or not all((out / f).is_file() for f in [DONE, *FILES.values()])
    manifest = {
        "format": FORMAT, "status": "building", "num_items": n, "fingerprint": fingerprint,
        "settings_hash": settings_hash(settings), "settings": settings, "dataset": str(dataset.root),
        **{m: {"encoder": p.name, "kind": settings[m]["kind"], "dim": p.dim, "tokens": p.tokens}
           for m, p in producers.items()},
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    shapes = _shapes(manifest)
    mode = "w+" if fresh else "r+"
    arrays = {k: np.memmap(out / FILES[k], dtype=np.float16 if k in ("vision", "text") else np.bool_,
                           mode=mode, shape=shapes[k]) for k in FILES}
    done = np.memmap(out / DONE, dtype=np.bool_, mode=mode, shape=(n,))
    _write_manifest(out, manifest)

    todo = np.flatnonzero(~np.asarray(done))
    with tqdm(total=n, initial=n - len(todo), unit="item", desc="encoding items",
              disable=not progress) as bar:
        for start in range(0, len(todo), batch_size):
            rows = todo[start:start + batch_size]
            frame = items[rows.tolist()]
            for m, producer in producers.items():
                arrays[m][rows], arrays[f"{m}_mask"][rows] = producer.encode(frame)
            for a in arrays.values():
                a.flush()
            # Marked done only once its rows are on disk: a crash here re-encodes this batch.
            done[rows] = True
            done.flush()
            bar.update(len(rows))
            if on_batch is not None:
                on_batch(int(np.count_nonzero(done)), n)

    for m in producers:
        manifest[m]["missing"] = int((~np.asarray(arrays[f"{m}_mask"]).any(axis=1)).sum())
    manifest["status"] = "complete"
    _write_manifest(out, manifest)
    return out


def _mapped(path: Path, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """A read-only-in-spirit memory map (private mapping: writes never reach the file)."""
    numel = int(np.prod(shape))
    if numel == 0:
        return torch.empty(shape, dtype=dtype)
    return torch.from_file(str(path), shared=False, size=numel, dtype=dtype).view(shape)


@dataclass
class TokenCache:
    """An opened, validated token cache; ``vision``/``text``... are memory-mapped tensors.

    Attributes:
        path: the cache directory.
        manifest: the parsed ``manifest.json``.
        tensors: vision N x Tv x Dv fp16, vision_mask N x Tv bool, text N x Tt x Dt fp16,
            text_mask N x Tt bool.
    """

    path: Path
    manifest: dict[str, Any]
    tensors: TokenTensors

    @classmethod
    def open(cls, cache_dir: str | Path, expect_fingerprint: str | None = None,
             expect_settings: dict | None = None) -> TokenCache:
        """Opens a complete cache, checking it against the caller's expectations.

        Args:
            expect_fingerprint: ``content_fingerprint(dataset.items)`` of the data about to be
                trained on; a different fingerprint means a stale cache.
            expect_settings: ``cache_settings(vision, text, tokens)`` the caller asked for.

        Raises:
            DataError: missing, incomplete, stale, mismatched or truncated cache.
        """
        path = Path(cache_dir)
        manifest = _read_manifest(path)
        where = str(path / MANIFEST)
        if manifest is None:
            raise DataError(Problem(str(path), "no token cache here (manifest.json missing); build "
                                    "it with `recsys features DATA_DIR`"))
        if manifest.get("status") != "complete":
            done = path / DONE
            count = int(np.fromfile(done, dtype=np.bool_).sum()) if done.is_file() else 0
            raise DataError(Problem(where, f"token cache is incomplete ({count} of "
                                    f"{manifest.get('num_items')} items encoded); run `recsys "
                                    "features DATA_DIR` again to resume"))
        problems = _mismatches(manifest, expect_settings, expect_fingerprint)
        if problems:
            raise DataError([Problem(where, f"stale or mismatched token cache: {p}; rebuild with "
                                     "`recsys features DATA_DIR --force`") for p in problems])
        shapes = _shapes(manifest)
        loaded = {}
        for key, name in FILES.items():
            dtype = torch.float16 if key in ("vision", "text") else torch.bool
            expected = int(np.prod(shapes[key])) * (2 if dtype == torch.float16 else 1)
            size = (path / name).stat().st_size if (path / name).is_file() else -1
            if size != expected:
                raise DataError(Problem(str(path / name), f"has {size} bytes, the manifest implies "
                                        f"{expected} (shape {shapes[key]}); rebuild with --force"))
            loaded[key] = _mapped(path / name, shapes[key], dtype)
        return cls(path=path, manifest=manifest, tensors=TokenTensors(**loaded))

    @classmethod
    def for_dataset(cls, dataset: Dataset, vision: str = "tiny", text: str = "tiny",
                    tokens: int | None = DEFAULT_TOKENS) -> TokenCache:
        """Opens the default cache of ``dataset`` for these settings, refusing a stale one."""
        settings = cache_settings(vision, text, tokens)
        return cls.open(default_cache_dir(dataset.root, vision, text, tokens),
                        expect_fingerprint=content_fingerprint(dataset.items), expect_settings=settings)

    @property
    def vision(self) -> torch.Tensor:
        return self.tensors.vision

    @property
    def vision_mask(self) -> torch.Tensor:
        return self.tensors.vision_mask

    @property
    def text(self) -> torch.Tensor:
        return self.tensors.text

    @property
    def text_mask(self) -> torch.Tensor:
        return self.tensors.text_mask

    @property
    def num_items(self) -> int:
        return self.tensors.num_items

    @property
    def vision_dim(self) -> int:
        return self.tensors.vision_dim

    @property
    def text_dim(self) -> int:
        return self.tensors.text_dim

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]
