"""Media of the synthetic world: item images rendered from the latent topic and style, and
titles / descriptions drawn from topic vocabularies plus generic noise words.

The point of these renderings is that an item's *topic* and *style* are recoverable from its
content (so a content model can score items whose ID was never trained), while its *quality*
never enters them (so the ID embedding keeps a signal of its own). See docs/synthetic_world.md.
"""

from __future__ import annotations

import colorsys
import sys
from pathlib import Path

import numpy as np
from PIL import Image

# Hand-written vocabularies make the demo's text readable; topics beyond these get pseudo-words.
TOPIC_WORDS: dict[str, list[str]] = {
    "cooking": ["recipe", "kitchen", "pasta", "spice", "bake", "grill", "soup", "flavor", "chef", "dessert"],
    "travel": ["journey", "island", "mountain", "beach", "passport", "voyage", "hotel", "trail", "coast", "map"],
    "sports": ["match", "goal", "stadium", "team", "sprint", "league", "coach", "score", "trophy", "race"],
    "music": ["melody", "guitar", "concert", "album", "rhythm", "piano", "chorus", "band", "vinyl", "beat"],
    "tech": ["gadget", "laptop", "robot", "code", "circuit", "phone", "sensor", "cloud", "chip", "drone"],
    "fashion": ["dress", "style", "jacket", "runway", "fabric", "denim", "boots", "trend", "silk", "outfit"],
    "gaming": ["quest", "level", "console", "pixel", "arcade", "boss", "controller", "raid", "loot", "avatar"],
    "nature": ["forest", "river", "wildlife", "bloom", "meadow", "canyon", "leaf", "birds", "garden", "moss"],
    "cars": ["engine", "motor", "wheel", "turbo", "garage", "roadster", "drift", "speed", "chassis", "highway"],
    "science": ["planet", "atom", "galaxy", "lab", "fossil", "quantum", "telescope", "genome", "orbit", "molecule"],
    "comedy": ["laugh", "prank", "joke", "sketch", "parody", "giggle", "blooper", "funny", "satire", "standup"],
    "fitness": ["workout", "yoga", "muscle", "cardio", "stretch", "gym", "protein", "squat", "marathon", "pilates"],
}

GENERIC_WORDS = [
    "new", "best", "top", "guide", "day", "life", "story", "ultimate", "quick", "my", "the", "week",
    "vlog", "review", "part", "live", "daily", "official", "epic", "simple", "tips", "amazing", "how",
    "first", "world", "real", "big", "little", "secret", "home", "again", "inside", "really", "this",
]

_SYLLABLES = ["ka", "lo", "mi", "ru", "zen", "tor", "vel", "qua", "pim", "dra", "sol", "nix", "bo", "ter"]
SHAPES = ("circle", "square", "triangle", "diamond", "ring", "cross")


def topic_vocabulary(n_topics: int, words_per_topic: int = 10) -> tuple[list[str], list[list[str]]]:
    """Genre names and word lists of ``n_topics`` topics (hand-written first, pseudo-words after).

    Pseudo-words come from a generator seeded by the topic index only, so the vocabulary of a
    topic never depends on the world's seed or size.
    """
    names = list(TOPIC_WORDS)[:n_topics]
    vocab = [TOPIC_WORDS[n][:words_per_topic] for n in names]
    for t in range(len(names), n_topics):
        rng = np.random.default_rng([7919, t])
        words = []
        while len(words) < words_per_topic:
            w = "".join(rng.choice(_SYLLABLES, size=int(rng.integers(2, 4))))
            if w not in words:
                words.append(w)
        names.append(f"topic{t}")
        vocab.append(words)
    return names, vocab


def _sentences(topic: np.ndarray, lengths: np.ndarray, topic_prob: float, vocab: list[list[str]],
               rng: np.random.Generator) -> list[str]:
    """One string per item: each word is a topic word with ``topic_prob``, else a generic word.

    Draws are made as whole matrices (items x longest) so the random stream, and therefore the
    output, does not depend on how the loop below is written.
    """
    n, width = len(topic), int(lengths.max(initial=1))
    from_topic = rng.random((n, width)) < topic_prob
    topic_pick = rng.integers(0, len(vocab[0]), size=(n, width))
    generic_pick = rng.integers(0, len(GENERIC_WORDS), size=(n, width))
    out = []
    for i in range(n):
        words = [
            vocab[topic[i]][topic_pick[i, j]] if from_topic[i, j] else GENERIC_WORDS[generic_pick[i, j]]
            for j in range(lengths[i])
        ]
        out.append(" ".join(words))
    return out


def make_titles(topic: np.ndarray, vocab: list[list[str]], topic_prob: float,
                rng: np.random.Generator) -> list[str]:
    """Short titles (3-6 words, capitalised) with a trailing episode number as extra noise."""
    lengths = rng.integers(3, 7, size=len(topic))
    numbers = rng.integers(1, 100, size=len(topic))
    titles = _sentences(topic, lengths, topic_prob, vocab, rng)
    return [f"{t.title()} #{k}" for t, k in zip(titles, numbers, strict=True)]


def make_descriptions(topic: np.ndarray, vocab: list[list[str]], topic_prob: float,
                      rng: np.random.Generator) -> list[str]:
    """Longer, noisier descriptions (8-16 words)."""
    return _sentences(topic, rng.integers(8, 17, size=len(topic)), topic_prob, vocab, rng)


def item_text(topic: np.ndarray, genre_topic: np.ndarray, n_topics: int, title_topic_prob: float,
              description_topic_prob: float, rng: np.random.Generator) -> dict[str, list[str]]:
    """The text columns of the item table: ``title``, ``genre`` (a topic name) and
    ``description``, one entry per item."""
    names, vocab = topic_vocabulary(n_topics)
    return {
        "title": make_titles(topic, vocab, title_topic_prob, rng),
        "genre": [names[t] for t in genre_topic],
        "description": make_descriptions(topic, vocab, description_topic_prob, rng),
    }


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0)))


def render_image(topic: int, style: np.ndarray, n_topics: int, size: int, noise: float,
                 rng: np.random.Generator) -> np.ndarray:
    """Renders one item image, ``size x size x 3`` uint8.

    - topic → hue of the shape (evenly spaced on the colour wheel), the shape (six kinds,
      cycling) and the stripe orientation of the background (changes every six topics);
    - style[0] in [-1, 1] → stripe period (fine to coarse); style[1] → overall brightness;
    - noise → hue jitter, random position and size of the shape, Gaussian pixel noise.
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    yy = yy / (size - 1) * 2 - 1
    xx = xx / (size - 1) * 2 - 1
    hue = topic / n_topics + rng.normal(0.0, 0.15 * noise)
    brightness = 0.55 + 0.3 * float(style[1])

    angle = (topic // len(SHAPES)) * np.pi / 2 + np.pi / 4 * (topic // (2 * len(SHAPES)))
    period = 3.0 + 5.0 * (float(style[0]) + 1) / 2  # pixels
    coord = (xx * np.cos(angle) + yy * np.sin(angle)) * (size - 1) / 2
    stripes = (np.sin(2 * np.pi * coord / period) > 0).astype(np.float64)
    background = _hsv(hue + 0.5, 0.25, brightness * 0.8)
    img = background[None, None, :] * (0.75 + 0.25 * stripes[..., None])

    cx, cy = rng.uniform(-0.2, 0.2, size=2)
    r = rng.uniform(0.45, 0.65)
    dx, dy = xx - cx, yy - cy
    dist = np.sqrt(dx**2 + dy**2)
    shape = SHAPES[topic % len(SHAPES)]
    if shape == "circle":
        mask = dist < r
    elif shape == "square":
        mask = np.maximum(np.abs(dx), np.abs(dy)) < r * 0.8
    elif shape == "triangle":
        mask = (dy < r * 0.8) & (np.abs(dx) < (dy + r) / 2)
    elif shape == "diamond":
        mask = np.abs(dx) + np.abs(dy) < r
    elif shape == "ring":
        mask = (dist < r) & (dist > r * 0.55)
    else:  # cross
        mask = ((np.abs(dx) < r * 0.3) & (np.abs(dy) < r)) | ((np.abs(dy) < r * 0.3) & (np.abs(dx) < r))
    img[mask] = _hsv(hue, 0.85, min(1.0, brightness + 0.3))

    img = img + rng.normal(0.0, noise, size=img.shape)
    return (np.clip(img, 0.0, 1.0) * 255).round().astype(np.uint8)


def save_png(image: np.ndarray, path: Path) -> None:
    """Writes a PNG with fixed settings (PIL adds no timestamp, so the bytes are reproducible)."""
    Image.fromarray(image).save(path, format="PNG", compress_level=6, optimize=False)


def write_images(root: Path, paths: list[str | None], topic: np.ndarray, style: np.ndarray,
                 n_topics: int, size: int, noise: float, seed: int, progress: bool = False) -> None:
    """Renders and writes the image of every item whose relative path is not None."""
    for i, rel in enumerate(paths):
        if rel is None:
            continue
        # One generator per item: an image depends on (seed, item) only, not on the others.
        rng = np.random.default_rng([seed, 100, i])
        save_png(render_image(int(topic[i]), style[i], n_topics, size, noise, rng), root / rel)
        if progress and (i + 1) % 500 == 0:
            print(f"synth: {i + 1}/{len(paths)} images", file=sys.stderr)
