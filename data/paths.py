"""Paths a dataset names (its tables, its item images) are confined to the dataset directory.

A dataset is input that may come from someone else (docs/threat_model.md): a table named
``../../etc/hostname`` or an image path ``/home/me/.ssh/id_rsa.png`` must not make the toolkit
read a file outside the directory it was given. A path is resolved with symlinks followed, so
a link inside the directory that points out of it is refused too.
"""

from __future__ import annotations

from pathlib import Path


class PathRefused(ValueError):
    """A path that is not a usable file name inside the dataset directory; the message says
    why and goes into the ``Problem`` that names the file, column and row."""


def resolve_inside(root: Path, name: str) -> Path:
    """``root / name`` with symlinks followed (an absolute ``name`` stands alone).

    ``root`` must already be resolved (``load_dataset`` resolves it once).

    Raises:
        PathRefused: the result lies outside ``root``, or the name cannot be a path at all
            (empty, a NUL byte, too long, a symlink loop).
    """
    if name.strip() == "":
        raise PathRefused("empty path")
    try:
        full = (root / name).resolve()
    except (OSError, ValueError, RuntimeError) as err:  # NUL byte, name too long, symlink loop
        raise PathRefused(f"'{name}' is not a usable path ({type(err).__name__})") from None
    if full != root and not full.is_relative_to(root):
        raise PathRefused(f"'{name}' resolves to {full}, outside the dataset directory {root}")
    return full
