"""The pinned FuxiCTR model_zoo copy of benchmarks/peers.py: taken only when every digest matches.

The real upstream files are not in this repository (nor fetchable here), so the pin is swapped
for two small stand-in files; the reading of each kind of source is what is tested.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

from benchmarks import peers_model_zoo as mz

STAND_IN = {"LICENSE": b"Apache License 2.0\n",
            "model_zoo/DNN/DNN_torch/src/__init__.py": b"from .DNN import DNN\n"}


@pytest.fixture(autouse=True)
def pin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mz, "FILES", {p: hashlib.sha256(d).hexdigest()
                                      for p, d in STAND_IN.items()})


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    for p, data in files.items():
        (root / p).parent.mkdir(parents=True, exist_ok=True)
        (root / p).write_bytes(data)
    return root


def _tar(path: Path, files: dict[str, bytes], top: str) -> Path:
    with tarfile.open(path, "w:gz") as t:
        for p, data in files.items():
            info = tarfile.TarInfo(f"{top}/{p}")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return path


def _zip(path: Path, files: dict[str, bytes], top: str) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for p, data in files.items():
            z.writestr(f"{top}/{p}", data)
    return path


def _git(root: Path, files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch) -> Path:
    _tree(root, files)
    env = ["-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run(["git", "-C", str(root), "add", "."], check=True)
    subprocess.run(["git", "-C", str(root), *env, "commit", "-qm", "x"], check=True)
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()
    monkeypatch.setattr(mz, "COMMIT", head)
    return root


@pytest.mark.parametrize("kind", ["folder", "tar", "zip", "git"])
def test_installs_from_each_kind_of_source(tmp_path: Path, kind: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    source = {"folder": lambda: _tree(src / "FuxiCTR-main", STAND_IN).parent,
              "tar": lambda: _tar(tmp_path / "a.tar.gz", STAND_IN, "FuxiCTR-abc"),
              "zip": lambda: _zip(tmp_path / "a.zip", STAND_IN, "FuxiCTR-abc"),
              "git": lambda: _git(src, STAND_IN, monkeypatch)}[kind]()
    dest = tmp_path / "dest"
    assert not mz.is_installed(dest)
    assert mz.ensure_model_zoo(source, dest) == dest
    assert mz.is_installed(dest)
    assert mz.ensure_model_zoo(None, dest) == dest  # kept: no source needed again
    assert mz.package_dir(dest, "DNN") == dest / "model_zoo/DNN/DNN_torch/src"


def test_refuses_a_changed_or_missing_file_and_writes_nothing(tmp_path: Path) -> None:
    changed = {**STAND_IN, "LICENSE": b"something else\n"}
    dest = tmp_path / "dest"
    with pytest.raises(SystemExit, match="LICENSE: sha256 .* differs"):
        mz.install(_tree(tmp_path / "changed", changed), dest)
    missing = {k: v for k, v in STAND_IN.items() if k != "LICENSE"}
    with pytest.raises(SystemExit, match="LICENSE: missing"):
        mz.install(_tree(tmp_path / "missing", missing), dest)
    assert not dest.exists()


def test_without_a_copy_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="--model-zoo-source"):
        mz.ensure_model_zoo(None, tmp_path / "nothing")
