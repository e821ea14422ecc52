"""FuxiCTR's ``model_zoo`` DNN and DeepFM for ``benchmarks/peers.py``: a pinned, hash-checked
copy of the upstream files, unpacked under ``benchmarks/.data`` (git-ignored), never committed.

Why not from PyPI: no FuxiCTR distribution on PyPI ships them. The sdists and wheels of 2.0.0,
2.0.4, 2.1.3, 2.2.3, 2.3.0, 2.3.7, 2.3.9 and 2.3.10 hold ``model_zoo/LongCTR`` (2.3.9 on) and an
empty ``model_zoo/multitask`` only; 2.0.0's wheel has an old ``fuxictr/pytorch/models/DNN.py``
(no DeepFM) for the 2.0 API. The 2.3.10 package does ship the building blocks the two models
are made of (``BaseModel``, ``FeatureEmbedding``, ``MLP_Block``, ``FactorizationMachine``), but
the models themselves live only in the reczoo/FuxiCTR repository, which scripts here cannot
reach. So the files are taken from a copy of that repository that the person running the
benchmark provides (``--model-zoo-source``): a git repository, a checkout or unpacked archive,
or a ``.tar.gz`` / ``.zip`` archive of it. Every file is checked against the SHA-256 pinned
below before it is used; nothing is changed, and the worker imports it as it is.
"""

from __future__ import annotations

import hashlib
import subprocess
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / ".data"
# reczoo/FuxiCTR at this commit (2026-06-05, fuxictr/version.py "2.3.10"). The model files are
# unchanged in behaviour since May 2023 (later commits added docstrings and LF line endings).
COMMIT = "0245987fdc1d43c36164ea496a02324885a8557a"
FILES = {
    "LICENSE": "ed24b2447e7415e4baeaf4366d12db81e8a21224f3f1a69c08b8e30807b2ebaa",
    "model_zoo/DNN/DNN_torch/src/__init__.py":
        "1ad87fc86f08f3fc404661ff6e9d947287f0aac1397ea69ba29ac2ce9319ca6b",
    "model_zoo/DNN/DNN_torch/src/DNN.py":
        "80f0d8f4d81d61ae37aee552b8476fc26b78b88dd212e3dad1435b441fa0b8da",
    "model_zoo/DeepFM/DeepFM_torch/src/__init__.py":
        "ab6a7650b7147c4dcdfdbb42626c19fca2a3ec43281aeab3bfdf3da5e25d5726",
    "model_zoo/DeepFM/DeepFM_torch/src/DeepFM.py":
        "326fc8158d68e6e8bd922050c81ee44dd165f96e073a6e64ade8b3f703725e32",
}
# model name -> the package folder (holding ``__init__.py``) the worker imports it from
PACKAGES = {"DNN": "model_zoo/DNN/DNN_torch/src", "DeepFM": "model_zoo/DeepFM/DeepFM_torch/src"}
HOW = (f"give a copy of the reczoo/FuxiCTR repository at commit {COMMIT[:7]} with "
       "--model-zoo-source PATH (a git repository, a checkout or unpacked archive, or a "
       ".tar.gz/.zip archive of it); its files are checked against pinned SHA-256 digests")


def default_dest() -> Path:
    """Where the checked files are unpacked: ``benchmarks/.data/fuxictr-model-zoo-<commit>``."""
    return DATA / f"fuxictr-model-zoo-{COMMIT[:12]}"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_installed(dest: Path) -> bool:
    """Whether every pinned file is in ``dest`` with its pinned digest."""
    return all((dest / p).is_file() and _sha256((dest / p).read_bytes()) == h
               for p, h in FILES.items())


def _reader(source: Path) -> Callable[[str], bytes | None]:
    """A function path-in-repository -> bytes (None when absent) over ``source``.

    Archives as GitHub serves them put everything under one top folder
    (``FuxiCTR-<commit>/``); any single leading folder is accepted.
    """
    if (source / "HEAD").is_file() or (source / ".git").exists():  # bare or not
        def from_git(path: str) -> bytes | None:
            done = subprocess.run(["git", "-C", str(source), "show", f"{COMMIT}:{path}"],
                                  capture_output=True)
            return done.stdout if done.returncode == 0 else None
        return from_git
    if source.is_dir():
        tops = [source, *sorted(d for d in source.iterdir() if d.is_dir())]

        def from_dir(path: str) -> bytes | None:
            hit = next((t / path for t in tops if (t / path).is_file()), None)
            return None if hit is None else hit.read_bytes()
        return from_dir
    if zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as z:
            members = {n: z.read(n) for n in z.namelist() if not n.endswith("/")}
    elif tarfile.is_tarfile(source):
        with tarfile.open(source) as t:
            members = {m.name: t.extractfile(m).read() for m in t.getmembers() if m.isfile()}
    else:
        raise SystemExit(f"{source}: not a git repository, folder, .tar.gz or .zip; {HOW}")

    def from_archive(path: str) -> bytes | None:
        if path in members:
            return members[path]
        return next((data for name, data in members.items()
                     if name.split("/", 1)[-1] == path), None)
    return from_archive


def install(source: Path, dest: Path | None = None) -> Path:
    """Copies the pinned files from ``source`` into ``dest`` after checking each digest.

    Refuses (SystemExit naming every file) when a file is missing or differs, and writes
    nothing then: a different upstream revision must be a deliberate new pin, not a surprise.
    """
    dest = dest or default_dest()
    read = _reader(Path(source))
    found = {p: read(p) for p in FILES}
    bad = [f"{p}: {'missing' if data is None else 'sha256 ' + _sha256(data)[:12] + ' differs'}"
           for p, data in found.items() if data is None or _sha256(data) != FILES[p]]
    if bad:
        raise SystemExit(f"{source}: not the pinned FuxiCTR model_zoo files ("
                         + "; ".join(bad) + f"); {HOW}")
    for p, data in found.items():
        (dest / p).parent.mkdir(parents=True, exist_ok=True)
        (dest / p).write_bytes(data)
    return dest


def ensure_model_zoo(source: Path | None = None, dest: Path | None = None) -> Path:
    """The folder holding the checked DNN and DeepFM packages: installed from ``source`` when
    given (or not yet there), else the copy already under ``benchmarks/.data``."""
    dest = dest or default_dest()
    if source is not None:
        return install(source, dest)
    if is_installed(dest):
        return dest
    raise SystemExit(f"FuxiCTR model_zoo DNN/DeepFM not found in {dest}: no PyPI release of "
                     f"FuxiCTR ships them; {HOW}. Or run with --models DIN.")


def package_dir(root: Path, model: str) -> Path:
    """The model's package folder inside an installed copy (what the worker imports)."""
    return root / PACKAGES[model]

