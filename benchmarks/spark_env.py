"""The Spark side of ``benchmarks/spark_prepare.py``: its own virtual environment and Java.

pyspark (pinned, from PyPI) goes into ``.venv-spark`` beside the repository's ``.venv``, never
into the main environment: the project itself does not depend on Spark, the Spark preparation
job (``benchmarks/spark_prepare_job.py``) is a standalone script a cluster runs with
``spark-submit``. pyspark needs a Java runtime (17 or later for pyspark 4); it comes from
Debian's packages (``apt-get install -y openjdk-17-jre-headless``), which this script installs
itself when it runs as root and finds none.

    python benchmarks/spark_env.py          # creates .venv-spark (once) and checks Java
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPARK_VENV = ROOT / ".venv-spark"
PYSPARK_VERSION = "4.3.0"  # the newest on PyPI when written; needs Java 17+
MIN_JAVA = 17
JAVA_PACKAGE = "openjdk-17-jre-headless"
JAVA_HINT = (f"pyspark {PYSPARK_VERSION} needs Java {MIN_JAVA} or later: install it with "
             f"`apt-get install -y {JAVA_PACKAGE}` (Debian/Ubuntu) and put `java` on PATH or set "
             "JAVA_HOME")


class SparkUnavailable(RuntimeError):
    """Java or pyspark cannot be had on this machine; the message says how to get them."""


def java_major(java: str | None = None) -> int | None:
    """The major version of ``java`` (default: the one on JAVA_HOME or PATH), None when absent."""
    java = java or _java_binary()
    if java is None:
        return None
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    # `java -version` writes to stderr: openjdk version "17.0.15" 2025-04-15 (or "1.8.0_402").
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if match is None:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def _java_binary() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


def ensure_java(install: bool = True) -> int:
    """Returns the Java major version; installs Debian's JRE when absent, ``install`` is set
    and this process is root. Raises SparkUnavailable with the way to get it otherwise."""
    major = java_major()
    if major is not None and major >= MIN_JAVA:
        return major
    if install and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"installing {JAVA_PACKAGE} from Debian's packages ...", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-q"], check=False, env=env)
        subprocess.run(["apt-get", "install", "-y", "-q", JAVA_PACKAGE], check=False, env=env)
        major = java_major()
        if major is not None and major >= MIN_JAVA:
            return major
    found = "no java found" if major is None else f"found Java {major}"
    raise SparkUnavailable(f"{found}; {JAVA_HINT}")


def spark_python(venv: Path = SPARK_VENV) -> Path:
    return venv / "bin" / "python"


def spark_ready(venv: Path = SPARK_VENV) -> bool:
    """Whether ``venv`` holds the pinned pyspark and Java is usable (nothing is installed)."""
    stamp = venv / ".spark-stamp"
    ok_env = spark_python(venv).is_file() and stamp.is_file() and stamp.read_text() == _stamp()
    major = java_major()
    return ok_env and major is not None and major >= MIN_JAVA


def _stamp() -> str:
    return f"pyspark=={PYSPARK_VERSION}\n"


def ensure_spark_env(venv: Path = SPARK_VENV, install_java: bool = True) -> Path:
    """Creates ``venv`` with pyspark (once, recorded in a stamp file) after checking Java;
    returns the venv's python. Raises SparkUnavailable when Java cannot be had."""
    ensure_java(install_java)
    python, stamp = spark_python(venv), venv / ".spark-stamp"
    if python.is_file() and stamp.is_file() and stamp.read_text() == _stamp():
        return python
    print(f"setting up {venv} (pyspark=={PYSPARK_VERSION}) ...", flush=True)
    interpreter = shutil.which("python3.11") or sys.executable
    subprocess.run([interpreter, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q",
                    f"pyspark=={PYSPARK_VERSION}"], check=True)
    version = subprocess.run([str(python), "-c", "import pyspark; print(pyspark.__version__)"],
                             check=True, capture_output=True, text=True).stdout.strip()
    if version != PYSPARK_VERSION:
        raise SparkUnavailable(f"{venv}: pip installed pyspark {version}, wanted {PYSPARK_VERSION}")
    stamp.write_text(_stamp())
    print(f"{venv}: pyspark {version}", flush=True)
    return python


def main() -> None:
    try:
        python = ensure_spark_env()
    except SparkUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"ready: {python} (pyspark {PYSPARK_VERSION}, Java {java_major()})")


if __name__ == "__main__":
    main()
