"""Frozen vision and text encoders (Hugging Face ``transformers``), named by hub id or path.

An encoder is named by a string:

- ``"tiny"``: an offline preset, a small randomly initialised tower built from a config with a
  fixed seed (tests and the demo; no download);
- a local directory saved with ``save_pretrained`` (model + processor/tokenizer files);
- a hub id such as ``openai/clip-vit-base-patch16`` or ``sentence-transformers/all-MiniLM-L6-v2``
  (needs the model in the local Hugging Face cache or network access);
- a ``.npy`` / ``.parquet`` file of precomputed vectors (see ``multimodal.precomputed``).

Vision towers: CLIP, SigLIP, ViT (any model whose forward takes ``pixel_values`` and returns
``last_hidden_state``; for a dual-encoder checkpoint the ``vision_model`` is used), and
convolutional backbones (ResNet, ConvNeXt, ...: a config with ``hidden_sizes``) whose
B x C x H x W feature map becomes H*W tokens of width C. Text encoders: BERT / MiniLM (or a
dual encoder's ``text_model``). A frozen encoder is really frozen: ``eval()`` forever
(``train()`` is a no-op), ``requires_grad=False``, and it encodes under
``torch.inference_mode()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from PIL import Image
from torch import nn

from multimodal.preprocess import reduce_tokens, tiny_image_processor, tiny_tokenizer, tiny_vocab

TINY = "tiny"
VECTOR_SUFFIXES = (".npy", ".parquet")
SourceKind = Literal["tiny", "local", "hub", "vectors"]
_TINY_SEED = 1234  # the tiny towers are a pure function of this seed: caches are reproducible


class EncoderError(ValueError):
    """An encoder name or model that cannot be used (unknown path, not a vision tower, ...)."""


@dataclass(frozen=True)
class EncoderSource:
    """Where an encoder comes from: ``kind`` and ``name`` (preset, absolute path or hub id)."""

    kind: SourceKind
    name: str


def resolve_source(spec: str) -> EncoderSource:
    """Classifies an encoder name (see the module docstring).

    Raises:
        EncoderError: a vector file name whose file does not exist, or an empty name.
    """
    spec = spec.strip()
    if not spec:
        raise EncoderError("encoder name is empty")
    if spec == TINY:
        return EncoderSource("tiny", TINY)
    path = Path(spec).expanduser()
    if path.suffix.lower() in VECTOR_SUFFIXES:
        if not path.is_file():
            raise EncoderError(f"precomputed vector file not found: {spec}")
        return EncoderSource("vectors", str(path.resolve()))
    if path.exists():
        if not path.is_dir():
            raise EncoderError(f"{spec} is a file; a model is a directory saved with save_pretrained "
                             "(vector files end in .npy or .parquet)")
        return EncoderSource("local", str(path.resolve()))
    return EncoderSource("hub", spec)


class FrozenEncoder(nn.Module):
    """Base of the frozen towers: eval mode and no gradient, whatever the caller does."""

    def __init__(self, tower: nn.Module, name: str) -> None:
        super().__init__()
        self.tower = tower
        self.name = name
        tower.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> FrozenEncoder:
        # A parent module's .train() must not switch dropout back on in a frozen backbone.
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return next(self.tower.parameters()).device


def is_convolutional(config) -> bool:
    """A CNN backbone config (ResNet, ConvNeXt, RegNet, BiT: per-stage ``hidden_sizes``, no
    patches), whose model returns a B x C x H x W ``last_hidden_state``."""
    return hasattr(config, "hidden_sizes") and not hasattr(config, "patch_size")


def feature_map_tokens(hidden: torch.Tensor) -> torch.Tensor:
    """B x C x H x W feature map → B x (H*W) x C tokens, raster order (row by row), so
    ``reduce_tokens`` can fold them back into the H x W grid to pool spatial neighbours."""
    return hidden.flatten(2).transpose(1, 2)


def _fixed_size(processor) -> tuple[int, int] | None:
    """The (height, width) every image reaches the tower at, or None when it follows each
    image's aspect ratio. Probed on a tall and a wide blank image: processors express a fixed
    size in several ways (height/width, crop_size, shortest_edge + crop_pct)."""
    shapes = {tuple(processor(images=[Image.new("RGB", wh)], return_tensors="pt")
                    ["pixel_values"].shape[-2:]) for wh in ((96, 64), (64, 96))}
    return shapes.pop() if len(shapes) == 1 else None


class FrozenVisionEncoder(FrozenEncoder):
    """A frozen vision tower and its PIL image processor.

    ``encode(images, max_tokens)`` returns B x T x D float32 token features (T ≤ max_tokens):
    a ViT's CLS/register + patch tokens, or a CNN's feature map cells (D = its channels).
    """

    def __init__(self, tower: nn.Module, processor, name: str) -> None:
        super().__init__(tower, name)
        self.processor = processor
        cfg = tower.config
        if is_convolutional(cfg):
            size = _fixed_size(processor)
            if size is None:
                # The cache stores one token count for every item: a CNN's grid follows the
                # input size, so every image must reach the tower at the same size.
                raise EncoderError(f"'{name}': a convolutional tower needs an image processor "
                                   "that resizes or crops every image to one fixed size")
            self.image_size = size[0]
            self.grid: int | None = None  # read off each feature map
            self.dim = int(cfg.hidden_sizes[-1])
        else:
            self.image_size = int(cfg.image_size)
            self.grid = self.image_size // int(cfg.patch_size)
            self.dim = int(cfg.hidden_size)

    @torch.inference_mode()
    def encode(self, images: list[Image.Image], max_tokens: int | None = None) -> torch.Tensor:
        """images: B RGB PIL images → B x T x D float32 (patch grid pooled to ≤ max_tokens)."""
        pixels = self.processor(images=images, return_tensors="pt")["pixel_values"]
        hidden = self.tower(pixel_values=pixels.to(self.device)).last_hidden_state
        grid = self.grid
        if hidden.dim() == 4:  # B x C x H x W (a CNN): H*W tokens, no CLS
            # A non-square map has no square grid to pool in 2-D: reduce_tokens pools in 1-D.
            grid = hidden.shape[2] if hidden.shape[2] == hidden.shape[3] else None
            hidden = feature_map_tokens(hidden)
        return reduce_tokens(hidden.float(), max_tokens, grid).cpu()

    def num_tokens(self, max_tokens: int | None) -> int:
        """T, the tokens per image after pooling (one probe forward on a blank image)."""
        blank = Image.new("RGB", (self.image_size, self.image_size))
        return int(self.encode([blank], max_tokens).shape[1])


class FrozenTextEncoder(FrozenEncoder):
    """A frozen text encoder and its tokenizer (tokenisation happens here, before any model).

    ``encode(texts, max_tokens)`` returns (B x T x D float32, B x T bool) with T = max_tokens
    (capped by the model's position table): every text is padded to the same length so the
    cache rows line up.
    """

    def __init__(self, tower: nn.Module, tokenizer, name: str) -> None:
        super().__init__(tower, name)
        self.tokenizer = tokenizer
        self.dim = int(tower.config.hidden_size)
        self.max_positions = int(getattr(tower.config, "max_position_embeddings", 512))

    def num_tokens(self, max_tokens: int | None) -> int:
        return min(max_tokens or self.max_positions, self.max_positions)

    @torch.inference_mode()
    def encode(self, texts: list[str], max_tokens: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        length = self.num_tokens(max_tokens)
        enc = self.tokenizer(texts, padding="max_length", truncation=True, max_length=length,
                             return_tensors="pt")
        mask = enc["attention_mask"].to(torch.bool)
        out = self.tower(input_ids=enc["input_ids"].to(self.device),
                         attention_mask=enc["attention_mask"].to(self.device))
        return out.last_hidden_state.float().cpu(), mask


def _seeded(build):
    """Builds a module under a fixed seed without disturbing the caller's RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_TINY_SEED)
        return build()


def tiny_vision_encoder() -> FrozenVisionEncoder:
    """CLIP-style vision tower: 32x32 images, 8x8 patches (16 patches + CLS), width 32."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    cfg = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, image_size=32, patch_size=8)
    return FrozenVisionEncoder(_seeded(lambda: CLIPVisionModel(cfg)), tiny_image_processor(32), TINY)


def tiny_text_encoder() -> FrozenTextEncoder:
    """BERT-style text encoder over a character vocabulary: width 32, 2 layers, 64 positions."""
    from transformers import BertConfig, BertModel

    cfg = BertConfig(vocab_size=len(tiny_vocab()), hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    return FrozenTextEncoder(_seeded(lambda: BertModel(cfg, add_pooling_layer=False)),
                             tiny_tokenizer(), TINY)


def _pretrained(source: EncoderSource):
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    # transformers draws a "Loading weights" bar per model; for a frozen tower loaded in well
    # under a second it is noise on the user's terminal (and in --quiet runs), so it is off.
    bar_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return AutoModel.from_pretrained(source.name)
    except (OSError, ValueError) as exc:  # missing files / no or unknown config.json
        where = "directory" if source.kind == "local" else "hub id (offline machines need it cached)"
        raise EncoderError(f"cannot load model from {where} '{source.name}': {exc}") from exc
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()


def load_vision_encoder(spec: str) -> FrozenVisionEncoder:
    """Loads a frozen vision tower by name: ``tiny``, a local directory or a hub id.

    The processor comes from the same place (``AutoImageProcessor`` with the PIL backend).
    A CNN (e.g. ``ResNetModel``, as ``benchmarks/pretrained.py resnet50`` writes one) is taken
    as it is: its last stage's feature map gives the tokens.
    """
    source = resolve_source(spec)
    if source.kind == "tiny":
        return tiny_vision_encoder()
    if source.kind == "vectors":
        raise EncoderError(f"{spec} holds precomputed vectors, not a vision model")
    from transformers import AutoImageProcessor

    model = _pretrained(source)
    tower = getattr(model, "vision_model", None) if hasattr(model.config, "vision_config") else model
    if tower is None or not (hasattr(tower.config, "patch_size") or is_convolutional(tower.config)):
        raise EncoderError(f"'{spec}' is not a vision tower (CLIP / SigLIP / ViT / ResNet-style CNN)")
    try:
        processor = AutoImageProcessor.from_pretrained(source.name, backend="pil")
    except OSError as exc:
        raise EncoderError(f"no image processor config (preprocessor_config.json) for '{spec}'") from exc
    return FrozenVisionEncoder(tower, processor, source.name)


def load_text_encoder(spec: str) -> FrozenTextEncoder:
    """Loads a frozen text encoder by name: ``tiny``, a local directory or a hub id."""
    source = resolve_source(spec)
    if source.kind == "tiny":
        return tiny_text_encoder()
    if source.kind == "vectors":
        raise EncoderError(f"{spec} holds precomputed vectors, not a text model")
    from transformers import AutoTokenizer

    model = _pretrained(source)
    tower = getattr(model, "text_model", None) if hasattr(model.config, "text_config") else model
    if tower is None or not hasattr(tower.config, "hidden_size") or hasattr(tower.config, "patch_size"):
        raise EncoderError(f"'{spec}' is not a text encoder (BERT / MiniLM / CLIP text)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.name)
    except OSError as exc:
        raise EncoderError(f"no tokenizer files for '{spec}'") from exc
    return FrozenTextEncoder(tower, tokenizer, source.name)
