"""Turning raw item media into encoder inputs, with PIL + numpy only (no torchvision).

- images: ``load_rgb`` (alpha flattened on white, EXIF rotation applied) and the transformers
  ``*ImageProcessorPil`` classes for resizing/normalising (``AutoImageProcessor`` with
  ``backend="pil"``);
- text: a character-level WordPiece tokenizer for the offline ``tiny`` preset;
- token budgets: ``reduce_tokens`` pools a vision tower's patch grid down to at most N tokens.
"""

from __future__ import annotations

import math
import string
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def load_rgb(path: str | Path) -> Image.Image:
    """Opens an image as 8-bit RGB.

    Transparent pixels are composited on white rather than dropped to black (what a plain
    ``convert("RGB")`` would do), since product images often have transparent backgrounds.
    """
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(canvas, rgba).convert("RGB")
        return im.convert("RGB")


def tiny_vocab() -> list[str]:
    """Vocabulary of the offline ``tiny`` text preset: specials, characters, ``##`` suffixes."""
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    return [*SPECIAL_TOKENS, *chars, *(f"##{c}" for c in chars)]


def tiny_tokenizer():  # -> transformers.BertTokenizer (imported lazily: transformers is heavy)
    """A character-level WordPiece ``BertTokenizer`` built in memory (no files, no network)."""
    from transformers import BertTokenizer

    vocab = tiny_vocab()
    return BertTokenizer(vocab={tok: i for i, tok in enumerate(vocab)}, do_lower_case=True)


def tiny_image_processor(image_size: int):
    """A ``CLIPImageProcessorPil`` for square ``image_size`` inputs (resize + centre crop)."""
    from transformers import CLIPImageProcessorPil

    return CLIPImageProcessorPil(size={"shortest_edge": image_size},
                                 crop_size={"height": image_size, "width": image_size})


def pooled_grid(budget: int, grid: int) -> tuple[int, int]:
    """The (h, w) with h*w ≤ budget, h ≤ w ≤ grid, that a grid x grid patch grid is pooled to."""
    h = min(grid, max(1, math.isqrt(budget)))
    return h, min(grid, max(1, budget // h))


def reduce_tokens(hidden: torch.Tensor, max_tokens: int | None, grid: int | None) -> torch.Tensor:
    """Pools vision tokens B x T x D down to at most ``max_tokens`` tokens.

    ``grid`` is the side of the square patch grid (image_size // patch_size) or None when
    unknown. Leading non-patch tokens (CLS / registers: T - grid²) are kept as they are, and
    the patch grid is average-pooled in 2-D to the largest h x w grid that fits in the rest of
    the budget, so spatial neighbours are merged (not raster-order runs). Without a square
    grid, tokens are average-pooled in 1-D.

    Returns B x T' x D with T' ≤ max_tokens (T' = T when T already fits or max_tokens is None).
    """
    b, t, d = hidden.shape
    if max_tokens is None or t <= max_tokens:
        return hidden
    prefix = t - grid * grid if grid else -1
    if grid and 0 <= prefix < max_tokens:
        h, w = pooled_grid(max_tokens - prefix, grid)
        patches = hidden[:, prefix:].reshape(b, grid, grid, d).permute(0, 3, 1, 2)
        pooled = F.adaptive_avg_pool2d(patches, (h, w)).flatten(2).transpose(1, 2)
        return torch.cat([hidden[:, :prefix], pooled], dim=1)
    return F.adaptive_avg_pool1d(hidden.transpose(1, 2), max_tokens).transpose(1, 2)
