"""Building a pure-Python wheel on the spot, for the tests that serve one to the real pip."""

from __future__ import annotations

import zipfile
from pathlib import Path


def build_wheel(folder: Path, package: str, version: str, files: dict[str, Path | str]) -> Path:
    """``folder/<module>-<version>-py3-none-any.whl`` holding ``files`` (archive name → a file
    to copy or its text) and the metadata pip needs to accept it."""
    module = package.replace("-", "_")
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{module}-{version}-py3-none-any.whl"
    info = f"{module}-{version}.dist-info"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, content in files.items():
            if isinstance(content, Path):
                zf.write(content, name)
            else:
                zf.writestr(name, content)
        zf.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n")
        zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                     "Tag: py3-none-any\n")
        zf.writestr(f"{info}/RECORD", "")
    return wheel
