"""Converts checkpoints of the earlier format (extra state pickled in ``extra_state.pt``) to the
current one (``extra_state.json`` plus ``extra_tensors.pt``), for runs whose origin you trust.

    python -m ranking.checkpoint_convert DIR [DIR ...]

converts every checkpoint folder under each DIR (a run directory converts its resume and best
checkpoints alike). The old file is read with ``torch.load(weights_only=True)``, which builds
tensors, plain values and numpy arrays only (the RNG states of the earlier format) and refuses
anything else, so even a converted file runs no code; a file that needs more is left alone and
reported. ``load_checkpoint`` itself never reads the old file.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ranking.checkpoint import EXTRA_FILE, LEGACY_EXTRA_FILE, TENSORS_FILE, encode_extra

# numpy's array reconstruction, under the module names numpy 1.x and 2.x pickle it with.
_NUMPY_GLOBALS = [(np._core.multiarray._reconstruct, name) for name in (
    "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct")]
_NUMPY_GLOBALS += [np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def _plain(value: Any) -> Any:
    """numpy arrays and scalars as lists and numbers, tuples as lists, recursively."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def convert_checkpoint(folder: Path) -> None:
    """Rewrites one checkpoint folder's legacy extra state in the current format.

    Raises:
        pickle.UnpicklingError: the old file needs more than tensors, plain values and numpy
            arrays (it is left as it was).
    """
    legacy = folder / LEGACY_EXTRA_FILE
    with torch.serialization.safe_globals(_NUMPY_GLOBALS):
        extra = torch.load(legacy, map_location="cpu", weights_only=True)
    text, tensors = encode_extra(_plain(dict(extra)))
    if tensors:
        torch.save(tensors, folder / f".{TENSORS_FILE}.tmp")
        os.replace(folder / f".{TENSORS_FILE}.tmp", folder / TENSORS_FILE)
    (folder / f".{EXTRA_FILE}.tmp").write_text(text)
    os.replace(folder / f".{EXTRA_FILE}.tmp", folder / EXTRA_FILE)
    legacy.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ranking.checkpoint_convert",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="run or checkpoint directories")
    args = parser.parse_args(argv)
    status = 0
    for root in args.dirs:
        found = sorted(p.parent for p in root.rglob(LEGACY_EXTRA_FILE))
        if not found:
            print(f"{root}: no checkpoint of the earlier format")
        for folder in found:
            try:
                convert_checkpoint(folder)
                print(f"converted {folder}")
            except pickle.UnpicklingError:
                print(f"error: {folder / LEGACY_EXTRA_FILE} not converted: it needs Python "
                      "objects beyond tensors, plain values and numpy arrays to load",
                      file=sys.stderr)
                status = 2
    return status


if __name__ == "__main__":
    sys.exit(main())
