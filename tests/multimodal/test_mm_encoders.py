"""Frozen encoders: the real from_pretrained path on tiny saved models, presets, preprocessing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    BertConfig,
    BertModel,
    CLIPConfig,
    CLIPImageProcessorPil,
    CLIPModel,
    CLIPVisionConfig,
    CLIPVisionModel,
    SiglipImageProcessorPil,
    SiglipVisionConfig,
    SiglipVisionModel,
    ViTConfig,
    ViTImageProcessorPil,
    ViTModel,
)

from multimodal.encoders import (
    EncoderError,
    load_text_encoder,
    load_vision_encoder,
    resolve_source,
    tiny_text_encoder,
    tiny_vision_encoder,
)
from multimodal.preprocess import load_rgb, reduce_tokens, tiny_tokenizer, tiny_vocab
from multimodal.token_cache import TokenCache, build_token_cache, default_cache_dir
from tests.multimodal.fixtures import write_dataset

SMALL = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
TEXT = dict(vocab_size=len(tiny_vocab()), max_position_embeddings=32, **SMALL)


def _vision_models():
    size = {"height": 16, "width": 16}
    return {
        "clip": (CLIPVisionModel(CLIPVisionConfig(image_size=16, patch_size=8, **SMALL)),
                 CLIPImageProcessorPil(size={"shortest_edge": 16}, crop_size=size), 5),
        "vit": (ViTModel(ViTConfig(image_size=16, patch_size=8, **SMALL), add_pooling_layer=False),
                ViTImageProcessorPil(size=size), 5),
        "siglip": (SiglipVisionModel(SiglipVisionConfig(image_size=16, patch_size=8, **SMALL)),
                   SiglipImageProcessorPil(size=size), 4),
    }


def _images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (20 + 3 * i, 18, 3), dtype=np.uint8)) for i in range(2)]


@pytest.mark.parametrize("kind", ["clip", "vit", "siglip"])
def test_vision_tower_saved_with_save_pretrained_loads_frozen_and_matches(kind, tmp_path):
    torch.manual_seed(0)
    model, processor, tokens = _vision_models()[kind]
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    enc = load_vision_encoder(str(tmp_path))
    assert type(enc.processor).__name__.endswith("Pil")  # no torchvision on these machines
    enc.train()  # a parent's .train() must not unfreeze it
    assert not enc.training and not enc.tower.training
    assert not any(p.requires_grad for p in enc.parameters())
    out = enc.encode(_images())
    assert out.shape == (2, tokens, 16) and not out.requires_grad
    pixels = processor(images=_images(), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        expected = model.eval()(pixel_values=pixels).last_hidden_state
    torch.testing.assert_close(out, expected)


def test_dual_encoder_checkpoint_gives_its_vision_and_text_towers(tmp_path):
    torch.manual_seed(0)
    cfg = CLIPConfig(text_config=dict(TEXT), vision_config=dict(image_size=16, patch_size=8, **SMALL),
                     projection_dim=8)
    CLIPModel(cfg).save_pretrained(tmp_path)
    CLIPImageProcessorPil(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}
                          ).save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    vision, text = load_vision_encoder(str(tmp_path)), load_text_encoder(str(tmp_path))
    assert vision.encode(_images()).shape == (2, 5, 16)
    hidden, mask = text.encode(["a red bicycle", "tea"], 6)
    assert hidden.shape == (2, 6, 16) and mask.sum(1).tolist() == [6, 5]  # 'tea' = CLS t e a SEP


def test_text_encoder_saved_with_save_pretrained_loads_and_matches(tmp_path):
    torch.manual_seed(0)
    model = BertModel(BertConfig(**TEXT), add_pooling_layer=False)
    tok = tiny_tokenizer()
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    enc = load_text_encoder(str(tmp_path))
    assert enc.num_tokens(None) == 32 and enc.num_tokens(100) == 32  # capped by positions
    hidden, mask = enc.encode(["Item number 1", "x"], 8)
    batch = tok(["Item number 1", "x"], padding="max_length", truncation=True, max_length=8,
                return_tensors="pt")
    with torch.no_grad():
        expected = model.eval()(**batch).last_hidden_state
    torch.testing.assert_close(hidden, expected)
    assert torch.equal(mask, batch["attention_mask"].bool())


def test_cache_from_local_models_records_their_content(tmp_path):
    vision_dir, text_dir = tmp_path / "vision", tmp_path / "text"
    model, processor, _ = _vision_models()["clip"]
    model.save_pretrained(vision_dir)
    processor.save_pretrained(vision_dir)
    BertModel(BertConfig(**TEXT)).save_pretrained(text_dir)
    tiny_tokenizer().save_pretrained(text_dir)
    root = write_dataset(tmp_path / "ds")
    out = build_token_cache(root, vision=str(vision_dir), text=str(text_dir), tokens=4,
                            progress=False)
    cache = TokenCache.open(out)
    # 2 x 2 patches + CLS = 5 tokens > 4: CLS + the patches pooled to a 1 x 2 grid.
    assert cache.vision.shape == (7, 3, 16) and cache.text.shape == (7, 4, 16)
    assert cache.manifest["settings"]["vision"]["kind"] == "local"
    # New weights at the same path are new settings: another cache directory.
    before = default_cache_dir(root, str(vision_dir), str(text_dir), 4)
    CLIPVisionModel(CLIPVisionConfig(image_size=16, patch_size=8, **SMALL)).save_pretrained(vision_dir)
    assert default_cache_dir(root, str(vision_dir), str(text_dir), 4) != before == out


def test_tiny_presets_are_deterministic_and_do_not_touch_the_global_rng():
    torch.manual_seed(7)
    state = torch.random.get_rng_state()
    a, b = tiny_vision_encoder(), tiny_vision_encoder()
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    hidden, mask = tiny_text_encoder().encode(["Hello, world"], 16)
    # Words split into characters, the space is no token: CLS + 5 + 1 + 5 + SEP.
    assert hidden.shape == (1, 16, 32) and int(mask.sum()) == 13


def test_reduce_tokens_keeps_cls_and_pools_the_patch_grid_spatially():
    grid = torch.arange(16, dtype=torch.float32).view(1, 16, 1)  # 4 x 4 patch values 0..15
    hidden = torch.cat([torch.full((1, 1, 1), -1.0), grid], dim=1)  # CLS first
    out = reduce_tokens(hidden, 5, grid=4)  # CLS + 2 x 2 pooled grid
    assert out.flatten().tolist() == [-1.0, 2.5, 4.5, 10.5, 12.5]  # quadrant means
    assert reduce_tokens(hidden, 17, grid=4) is hidden
    assert reduce_tokens(hidden, 3, grid=None).shape == (1, 3, 1)


def test_load_rgb_flattens_transparency_on_white(tmp_path):
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[0, 0] = [255, 0, 0, 255]  # one opaque red pixel, the rest transparent
    Image.fromarray(rgba).save(tmp_path / "a.png")
    im = np.asarray(load_rgb(tmp_path / "a.png"))
    assert im.shape == (4, 4, 3)
    assert im[0, 0].tolist() == [255, 0, 0] and im[3, 3].tolist() == [255, 255, 255]


def test_encoder_names_are_resolved_or_refused(tmp_path):
    assert resolve_source("tiny").kind == "tiny"
    assert resolve_source("openai/clip-vit-base-patch16").kind == "hub"
    assert resolve_source(str(tmp_path)).kind == "local"
    with pytest.raises(EncoderError, match="vector file not found"):
        resolve_source(str(tmp_path / "missing.npy"))
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(EncoderError, match="is a file"):
        resolve_source(str(tmp_path / "weights.bin"))
    with pytest.raises(EncoderError, match="cannot load model"):
        load_vision_encoder(str(Path(tmp_path)))  # a directory without a model
