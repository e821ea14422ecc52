"""Convolutional vision towers (ResNet): a feature map B x C x H x W becomes H*W tokens of C.

Loaded through the same local-path code as a real checkpoint, from a tiny ``ResNetModel``
built from a config and saved with ``save_pretrained``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    BitImageProcessorPil,
    ConvNextImageProcessorPil,
    ResNetConfig,
    ResNetModel,
    ViTImageProcessorPil,
)

from multimodal.encoders import EncoderError, load_text_encoder, load_vision_encoder
from multimodal.token_cache import TokenCache, build_token_cache
from tests.multimodal.fixtures import write_dataset

# Output stride 32: 128 x 128 pixels give a 4 x 4 map of the last stage's 32 channels.
TINY_RESNET = dict(embedding_size=8, hidden_sizes=[8, 16, 16, 32], depths=[1, 1, 1, 1],
                   layer_type="bottleneck")


def _images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (40 + 9 * i, 30, 3), dtype=np.uint8))
            for i in range(2)]


@pytest.fixture
def resnet_dir(tmp_path):
    torch.manual_seed(0)
    model = ResNetModel(ResNetConfig(**TINY_RESNET))
    model.save_pretrained(tmp_path / "resnet")
    ViTImageProcessorPil(size={"height": 128, "width": 128}).save_pretrained(tmp_path / "resnet")
    return tmp_path / "resnet"


def test_resnet_feature_map_becomes_raster_order_tokens(resnet_dir):
    enc = load_vision_encoder(str(resnet_dir))
    enc.train()  # a parent's .train() must not unfreeze it (BatchNorm statistics included)
    assert not enc.tower.training and not any(p.requires_grad for p in enc.parameters())
    assert (enc.dim, enc.image_size, enc.num_tokens(None)) == (32, 128, 16)
    out = enc.encode(_images())
    pixels = enc.processor(images=_images(), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        fmap = ResNetModel.from_pretrained(resnet_dir).eval()(pixel_values=pixels).last_hidden_state
    assert fmap.shape == (2, 32, 4, 4) and out.shape == (2, 16, 32)
    # token r*4 + c is cell (r, c) of the map: row by row
    torch.testing.assert_close(out[:, 6], fmap[:, :, 1, 2])
    torch.testing.assert_close(out, fmap.flatten(2).transpose(1, 2))
    # A budget of 4 pools the 4 x 4 grid to its 2 x 2 quadrants (no CLS to keep).
    pooled = enc.encode(_images(), max_tokens=4)
    torch.testing.assert_close(pooled[:, 1], fmap[:, :, :2, 2:].mean(dim=(2, 3)))
    assert enc.num_tokens(4) == 4


def test_cache_from_a_local_resnet(resnet_dir, tmp_path):
    root = write_dataset(tmp_path / "ds")
    cache = TokenCache.open(build_token_cache(root, vision=str(resnet_dir), text="tiny", tokens=4,
                                              progress=False))
    assert cache.vision.shape == (7, 4, 32) and cache.manifest["vision"]["dim"] == 32
    assert cache.vision_mask.any(1).sum() > 0


@pytest.mark.parametrize(("processor", "accepted"), [
    # resize to 160 then centre-crop 140: fixed although the config says shortest_edge
    (ConvNextImageProcessorPil(size={"shortest_edge": 140}, crop_pct=0.875), True),
    (BitImageProcessorPil(size={"shortest_edge": 64}, do_center_crop=False), False),
])
def test_a_cnn_needs_one_input_size_for_one_token_count(resnet_dir, processor, accepted):
    processor.save_pretrained(resnet_dir)
    if accepted:
        assert load_vision_encoder(str(resnet_dir)).encode(_images()).shape == (2, 25, 32)
    else:
        with pytest.raises(EncoderError, match="one fixed size"):
            load_vision_encoder(str(resnet_dir))


def test_a_resnet_is_no_text_encoder(resnet_dir):
    with pytest.raises(EncoderError, match="not a text encoder"):
        load_text_encoder(str(resnet_dir))
