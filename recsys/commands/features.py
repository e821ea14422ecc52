"""``recsys features DATA_DIR``: encode every item once into the token cache."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from data.dataset import load_dataset
from multimodal.encoders import EncoderError
from multimodal.token_cache import DEFAULT_TOKENS, build_token_cache
from recsys.errors import UsageError

DESCRIPTION = """\
Encode every item of a dataset once with frozen encoders and store the token features the
Fusion-Q-Former trains on (fp16, memory-mapped, one row per item).

Encoders are named by:
  tiny                  a small randomly initialised offline preset (tests, demo)
  PATH                  a directory saved with save_pretrained (model + processor/tokenizer)
  HUB_ID                e.g. openai/clip-vit-base-patch16, sentence-transformers/all-MiniLM-L6-v2
                        (must already be in the local Hugging Face cache on offline machines)
  FILE.npy|FILE.parquet precomputed vectors, one per item, used as a single token
                        (.npy: row i = integer item id i; .parquet: item_id + one vector column)

The cache goes to DATA_DIR/.cache/tokens-<hash of the encoder settings>/ unless --out is given.
An interrupted run resumes where it stopped. An existing cache built from other items, media or
settings is refused (the message names the difference) unless --force is given. Items without
an image or text get a modality mask, not zero vectors pretending to be content.
"""


def _tokens(value: str) -> int | None:
    if value == "all":
        return None
    try:
        n = int(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {value!r}") from exc
    if n < 1:
        raise argparse.ArgumentTypeError(f"--tokens must be >= 1, got {n}")
    return n


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "features", help="encode item images and texts once into the token cache",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("data_dir", metavar="DATA_DIR", type=Path, help="contract dataset directory")
    p.add_argument("--vision", default="tiny", metavar="ID|PATH|tiny|FILE",
                   help="vision tower (CLIP / SigLIP / ViT) or vector file (default: tiny)")
    p.add_argument("--text", default="tiny", metavar="ID|PATH|tiny|FILE",
                   help="text encoder (BERT / MiniLM) or vector file (default: tiny)")
    p.add_argument("--tokens", type=_tokens, default=DEFAULT_TOKENS, metavar="N",
                   help="tokens kept per modality: text padded/truncated to N, the image patch grid "
                        f"average-pooled to at most N; 'all' keeps every token (default: {DEFAULT_TOKENS})")
    p.add_argument("--batch-size", type=int, default=64, metavar="B",
                   help="items per encoder batch; progress is saved after each (default: 64)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="cache directory (default: DATA_DIR/.cache/tokens-<settings hash>)")
    p.add_argument("--allow-missing-media", action="store_true",
                   help="treat missing or unreadable images as items without an image (masked) "
                        "instead of failing")
    p.add_argument("--force", action="store_true",
                   help="rebuild an existing cache that was built from other items or settings")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    dataset = load_dataset(args.data_dir, allow_missing_media=args.allow_missing_media)
    try:
        out = build_token_cache(dataset, args.out, vision=args.vision, text=args.text,
                                tokens=args.tokens, batch_size=args.batch_size,
                                progress=not args.no_progress,
                                allow_missing_media=args.allow_missing_media, overwrite=args.force)
    except EncoderError as exc:  # bad encoder names and settings are usage errors, not bugs
        raise UsageError(str(exc)) from exc
    manifest = json.loads((out / "manifest.json").read_text())
    for m in ("vision", "text"):
        info = manifest[m]
        print(f"{m}: {info['encoder']} ({info['kind']}), {info['tokens']} tokens x {info['dim']}, "
              f"{info['missing']} of {manifest['num_items']} items without it")
    print(f"token cache: {out}")
    return 0
