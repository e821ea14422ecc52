"""Token cache: round trip, modality masks, resume after interruption, stale refusal, vectors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from data.dataset import load_dataset
from data.errors import DataError
from multimodal.content import ItemContentEncoder
from multimodal.encoders import tiny_text_encoder, tiny_vision_encoder
from multimodal.fingerprint import content_fingerprint
from multimodal.preprocess import load_rgb
from multimodal.qformer import QFormerConfig
from multimodal.token_cache import (
    TokenCache,
    build_token_cache,
    cache_settings,
    default_cache_dir,
)
from tests.multimodal.fixtures import ITEMS, write_dataset

TOKENS = 8


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    """One complete cache shared by the read-only tests: (dataset dir, cache dir)."""
    root = write_dataset(tmp_path_factory.mktemp("cache") / "ds")
    return root, build_token_cache(root, tokens=TOKENS, batch_size=3, progress=False)


def test_round_trip_matches_the_encoders_and_masks_missing_media(built):
    root, out = built
    assert out == default_cache_dir(root, "tiny", "tiny", TOKENS)
    assert out.parent == root / ".cache" and out.name.startswith("tokens-")
    cache = TokenCache.open(out)
    # tiny vision: 16 patches + CLS; budget 8 = CLS + a 2 x 3 pooled grid = 7 tokens.
    assert cache.vision.shape == (ITEMS, 7, 32) and cache.vision.dtype == torch.float16
    assert cache.text.shape == (ITEMS, TOKENS, 32) and cache.text_mask.dtype == torch.bool
    assert cache.vision_mask[3].sum() == 0 and cache.vision_mask[[0, 1, 2, 4, 5, 6]].all()
    assert cache.text_mask[5].sum() == 0 and cache.text_mask[[0, 1, 2, 3, 4, 6]].any(dim=1).all()
    assert cache.vision[3].abs().sum() == 0 and cache.text[5].abs().sum() == 0
    m = cache.manifest
    assert m["status"] == "complete" and m["num_items"] == ITEMS
    assert (m["vision"]["tokens"], m["vision"]["dim"], m["vision"]["missing"]) == (7, 32, 1)
    assert (m["text"]["tokens"], m["text"]["dim"], m["text"]["missing"]) == (TOKENS, 32, 1)
    assert m["settings"] == cache_settings("tiny", "tiny", TOKENS)
    items = load_dataset(root).items
    assert m["fingerprint"] == content_fingerprint(items)
    # Rows hold exactly what the frozen encoders produce for that item (stored as fp16).
    image = items["image"][4]
    expected_v = tiny_vision_encoder().encode([load_rgb(image)], TOKENS)[0].half()
    torch.testing.assert_close(cache.vision[4], expected_v, rtol=0, atol=0)
    hidden, mask = tiny_text_encoder().encode([items["text"][6]], TOKENS)
    torch.testing.assert_close(cache.text[6], (hidden[0] * mask[0, :, None]).half(), rtol=0, atol=0)
    assert torch.equal(cache.text_mask[6], mask[0])


def test_complete_cache_is_reused_and_opened_memory_mapped(built):
    root, out = built
    before = (out / "vision.f16").stat().st_mtime_ns
    assert build_token_cache(root, tokens=TOKENS, progress=False) == out
    assert (out / "vision.f16").stat().st_mtime_ns == before
    ds = load_dataset(root)
    cache = TokenCache.for_dataset(ds, tokens=TOKENS)
    assert cache.vision.is_shared()  # a file mapping, not a copy in process memory
    cache.vision[0, 0, 0] = 123.0  # private mapping: the file is never modified through it
    assert TokenCache.open(out).vision[0, 0, 0] != 123.0


def test_interrupted_build_refuses_to_open_then_resumes_to_identical_content(built, tmp_path):
    _, reference = built
    root = write_dataset(tmp_path / "ds")
    out = tmp_path / "cache"

    def stop_after_first_batch(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_token_cache(root, out, tokens=TOKENS, batch_size=3, progress=False,
                          on_batch=stop_after_first_batch)
    assert json.loads((out / "manifest.json").read_text())["status"] == "building"
    with pytest.raises(DataError, match=r"incomplete \(3 of 7 items encoded\)"):
        TokenCache.open(out)
    seen: list[int] = []
    build_token_cache(root, out, tokens=TOKENS, batch_size=3, progress=False,
                      on_batch=lambda done, total: seen.append(done))
    assert seen == [6, 7]  # only the 4 remaining items were encoded
    resumed, fresh = TokenCache.open(out), TokenCache.open(reference)
    for key in ("vision", "vision_mask", "text", "text_mask"):
        assert torch.equal(getattr(resumed, key), getattr(fresh, key)), key


BUILD = """
import sys, time
from pathlib import Path
from multimodal.token_cache import build_token_cache

def hold(done, total):
    # The first builder stops after its first item until the test says go (file GO exists).
    go = Path(sys.argv[4])
    while done == 1 and sys.argv[5] == "hold" and not go.exists():
        time.sleep(0.02)

build_token_cache(sys.argv[1], sys.argv[2], tokens=int(sys.argv[3]), batch_size=1, on_batch=hold)
print("built", flush=True)
"""


def test_two_processes_building_one_cache_take_turns_and_agree(built, tmp_path):
    _, reference = built
    root = write_dataset(tmp_path / "ds")
    out, go = tmp_path / "cache", tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}

    def builder(role: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", BUILD, str(root), str(out), str(TOKENS),
                                 str(go), role], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env)

    first = builder("hold")
    deadline = time.time() + 120
    while not (out / "done.bool").is_file() and time.time() < deadline:
        time.sleep(0.02)  # the first builder holds the lock and has started encoding
    second = builder("free")
    try:
        # The second one says it waits, and does: it cannot finish while the first holds on.
        assert second.stdout.readline().startswith("waiting for another process to finish")
        time.sleep(0.5)
        assert second.poll() is None and first.poll() is None
    finally:
        go.touch()
    first_out, first_err = first.communicate(timeout=120)
    second_out, second_err = second.communicate(timeout=120)
    assert first.returncode == 0 and second.returncode == 0, first_err[-2000:] + second_err[-2000:]
    assert first_out == second_out == "built\n"
    # The second found the cache complete and encoded nothing: the files are the first's, row
    # for row what a single build writes.
    assert "encoding items" in first_err and "encoding items" not in second_err
    together, alone = TokenCache.open(out), TokenCache.open(reference)
    for key in ("vision", "vision_mask", "text", "text_mask"):
        assert torch.equal(getattr(together, key), getattr(alone, key)), key


def test_stale_and_mismatched_caches_are_refused_with_the_mismatch_named(built, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(built[0], root, ignore=shutil.ignore_patterns(".cache"))
    out = build_token_cache(root, tokens=TOKENS, batch_size=4, progress=False)
    old_fingerprint = content_fingerprint(load_dataset(root).items)
    # Media change: same table, different poster bytes.
    load_rgb(root / "img" / "0.png").rotate(90).save(root / "img" / "0.png")
    new = load_dataset(root)
    assert content_fingerprint(new.items) != old_fingerprint
    with pytest.raises(DataError, match="item table/media fingerprint") as err:
        TokenCache.for_dataset(new, tokens=TOKENS)
    assert "--force" in str(err.value)
    with pytest.raises(DataError, match="existing token cache does not match: item table/media"):
        build_token_cache(new, out, tokens=TOKENS, progress=False)
    with pytest.raises(DataError, match="token budget: cache has 8, expected 4"):
        TokenCache.open(out, expect_settings=cache_settings("tiny", "tiny", 4))
    # --force rebuilds; the rebuilt cache matches the new data.
    build_token_cache(new, out, tokens=TOKENS, progress=False, overwrite=True)
    assert TokenCache.for_dataset(new, tokens=TOKENS).fingerprint == content_fingerprint(new.items)
    # A truncated data file is refused too.
    with (out / "text.f16").open("r+b") as fh:
        fh.truncate(10)
    with pytest.raises(DataError, match="text.f16: has 10 bytes"):
        TokenCache.open(out)
    with pytest.raises(DataError, match="no token cache here"):
        TokenCache.open(tmp_path / "nowhere")


def test_unreadable_image_is_masked_only_when_allowed(tmp_path):
    root = write_dataset(tmp_path / "ds")
    (root / "img" / "2.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="--allow-missing-media"):
        build_token_cache(root, tokens=4, progress=False)
    with pytest.warns(UserWarning, match="treated as missing"):
        out = build_token_cache(root, tokens=4, progress=False, allow_missing_media=True)
    cache = TokenCache.open(out)
    assert not cache.vision_mask[2].any() and not cache.vision_mask[3].any()
    assert cache.manifest["vision"]["missing"] == 2


def test_precomputed_vectors_become_length_one_tokens(tmp_path):
    root = write_dataset(tmp_path / "ds")
    rng = np.random.default_rng(0)
    # .npy: row i = item id i (MMRec); ids are 100..106, so rows 100.. exist; 104 is NaN.
    image_table = rng.normal(size=(110, 5)).astype(np.float32)
    image_table[104] = np.nan
    np.save(root / "image_feat.npy", image_table)
    # .parquet keyed by item_id; item 101 absent, item 102 all zeros (filler), 103 null.
    text_vecs = rng.normal(size=(ITEMS, 3)).astype(np.float32)
    text_vecs[2] = 0.0
    ids = [i for i in range(100, 100 + ITEMS) if i != 101]
    rows = [None if i == 103 else text_vecs[i - 100].tolist() for i in ids]
    pl.DataFrame({"item_id": ids, "vec": rows}).write_parquet(root / "text_feat.parquet")
    out = build_token_cache(root, vision=str(root / "image_feat.npy"),
                            text=str(root / "text_feat.parquet"), tokens=TOKENS, progress=False)
    cache = TokenCache.open(out)
    assert cache.vision.shape == (ITEMS, 1, 5) and cache.text.shape == (ITEMS, 1, 3)
    assert cache.vision_mask[:, 0].tolist() == [True, True, True, True, False, True, True]
    assert cache.text_mask[:, 0].tolist() == [True, False, False, False, True, True, True]
    torch.testing.assert_close(cache.vision[0, 0], torch.from_numpy(image_table[100]).half())
    torch.testing.assert_close(cache.text[6, 0], torch.from_numpy(text_vecs[6]).half())
    assert cache.manifest["settings"]["vision"]["kind"] == "vectors"
    assert "content" in cache.manifest["settings"]["vision"]  # file content is in the identity


def test_content_encoder_reads_the_cache_and_image_less_items_get_finite_embeddings(built):
    cache = TokenCache.open(built[1])
    cfg = QFormerConfig(vision_dim=cache.vision_dim, text_dim=cache.text_dim, hidden=16, heads=2,
                        num_queries=2, dropout=0.0)
    model = ItemContentEncoder(cache, cfg, seq_mode="lora")
    target = torch.tensor([3, 5, 0])  # no image, no text, both
    hist = torch.tensor([[3, 5, 0], [1, 0, 0], [6, 3, 0]])
    mask = torch.tensor([[True, True, True], [True, False, False], [True, True, False]])
    t, h = model(target, hist, mask)
    assert torch.isfinite(t).all() and torch.isfinite(h).all()
    assert not torch.allclose(t[0], t[2]) and not torch.allclose(t[1], t[2])
    torch.testing.assert_close(h[0, 0], t[0])  # adapters start at zero: same as the target path


def _edit_items(root: Path, edit) -> None:
    items = pl.read_parquet(root / "items.parquet")
    edit(items).write_parquet(root / "items.parquet")


ITEM_EDITS = {
    "edited_title": lambda items: items.with_columns(
        pl.when(pl.col("item_id") == 100).then(pl.lit("Item number zero")).otherwise(pl.col("title"))
        .alias("title")),
    "added_item": lambda items: pl.concat([items, pl.DataFrame(
        {"item_id": [107], "title": ["Item number 7"], "genres": ["drama"], "poster": ["img/0.png"]})]),
    "reordered_items": lambda items: items.reverse(),
}


@pytest.mark.parametrize("edit", list(ITEM_EDITS))
def test_an_item_table_change_makes_the_cache_stale(built, tmp_path, edit):
    """Row i of the cache is item_row i: a new title, one more item or the same items in
    another order all make the cached rows wrong, and the cache is refused."""
    root = tmp_path / "ds"
    shutil.copytree(built[0], root, ignore=shutil.ignore_patterns(".cache"))
    out = build_token_cache(root, tokens=TOKENS, batch_size=4, progress=False)
    before = content_fingerprint(load_dataset(root).items)
    _edit_items(root, ITEM_EDITS[edit])
    new = load_dataset(root)
    assert content_fingerprint(new.items) != before
    with pytest.raises(DataError, match="stale or mismatched token cache: item table/media"):
        TokenCache.for_dataset(new, tokens=TOKENS)
    with pytest.raises(DataError, match="existing token cache does not match: item table/media"):
        build_token_cache(new, out, tokens=TOKENS, progress=False)


def test_a_changed_encoder_is_refused_and_gets_a_cache_of_its_own(tmp_path):
    """An encoder is identified by its content (here a vector file): new vectors under the
    same file name are another encoder, refused for an existing cache directory, and the
    default directory of the new settings is another one."""
    root = write_dataset(tmp_path / "ds")
    vectors = root / "image_feat.npy"
    np.save(vectors, np.random.default_rng(0).normal(size=(110, 4)).astype(np.float32))
    out = build_token_cache(root, vision=str(vectors), tokens=TOKENS, progress=False)
    assert out == default_cache_dir(root, str(vectors), "tiny", TOKENS)
    np.save(vectors, np.random.default_rng(1).normal(size=(110, 4)).astype(np.float32))
    assert default_cache_dir(root, str(vectors), "tiny", TOKENS) != out
    with pytest.raises(DataError, match="vision encoder: cache has vectors .* expected vectors"):
        build_token_cache(root, out, vision=str(vectors), tokens=TOKENS, progress=False)
    with pytest.raises(DataError, match="stale or mismatched token cache: vision encoder"):
        TokenCache.open(out, expect_settings=cache_settings(str(vectors), "tiny", TOKENS))
    # Another text encoder for the same directory is named too.
    with pytest.raises(DataError, match="text encoder: cache has tiny 'tiny'"):
        TokenCache.open(out, expect_settings=cache_settings(str(vectors), str(vectors), TOKENS))


def test_new_interactions_and_a_moved_dataset_keep_the_cache(built, tmp_path):
    """Promises of the fingerprint: interactions are not item content, and paths are not
    hashed, so neither a longer log nor a moved dataset directory re-encodes anything."""
    root = tmp_path / "ds"
    shutil.copytree(built[0], root, ignore=shutil.ignore_patterns(".cache"))
    out = build_token_cache(root, tokens=TOKENS, progress=False)
    reference = TokenCache.open(out)
    stamp = (out / "vision.f16").stat().st_mtime_ns

    inter = pl.read_parquet(root / "interactions.parquet")
    pl.concat([inter, inter.with_columns(pl.col("timestamp") + 100)]).write_parquet(
        root / "interactions.parquet")
    longer = load_dataset(root)
    assert longer.interactions.height == 2 * inter.height
    assert TokenCache.for_dataset(longer, tokens=TOKENS).fingerprint == reference.fingerprint
    assert build_token_cache(longer, tokens=TOKENS, progress=False) == out
    assert (out / "vision.f16").stat().st_mtime_ns == stamp  # nothing re-encoded

    moved = tmp_path / "elsewhere" / "ds"
    moved.parent.mkdir()
    shutil.move(root, moved)
    dataset = load_dataset(moved)
    assert dataset.items["image"][0].startswith(str(moved))  # paths did change
    cache = TokenCache.for_dataset(dataset, tokens=TOKENS)
    assert cache.path == default_cache_dir(moved, "tiny", "tiny", TOKENS)
    for key in ("vision", "vision_mask", "text", "text_mask"):
        assert torch.equal(getattr(cache, key), getattr(reference, key)), key
