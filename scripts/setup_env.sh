#!/usr/bin/env bash
# Creates .venv and installs the toolkit with the version-locked torch / torchrec / fbgemm stack.
#
# Why a script and not plain `pip install -e .`: torchrec's metadata requires the CUDA build of
# `fbgemm-gpu`, which would drag several GB of CUDA wheels (and a CUDA torch) onto a CPU
# machine. So torch and fbgemm are installed first, for the machine we are on, and torchrec
# with --no-deps plus its real runtime dependencies (docs/design.md §6).
#
# Re-running is cheap: a stamp file records the hash of the inputs of the last good install.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3.11}
VENV=${VENV:-.venv}
TORCH_VERSION=2.13.0
TORCHREC_VERSION=1.8.0
FBGEMM_VERSION=1.8.0

stamp_inputs=$(cat pyproject.toml scripts/setup_env.sh | sha256sum | cut -c1-16)
stamp="$VENV/.installed-$stamp_inputs"
if [ -f "$stamp" ]; then
  exit 0
fi

if ! command -v "$PY" >/dev/null 2>&1; then
  PY=python3
fi
"$PY" -c 'import sys; assert sys.version_info[:2] >= (3, 11), sys.version' || {
  echo "setup_env: Python >= 3.11 is required (found $("$PY" --version))" >&2; exit 2; }

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "setup_env: CUDA GPU found: torch $TORCH_VERSION (CUDA) + fbgemm-gpu $FBGEMM_VERSION"
  "${pip[@]}" "torch==$TORCH_VERSION" "fbgemm-gpu==$FBGEMM_VERSION"
else
  echo "setup_env: no GPU: torch $TORCH_VERSION (CPU) + fbgemm-gpu-cpu $FBGEMM_VERSION"
  # Pinning torch exactly makes pip take the CPU wheel present on these machines; an open range
  # would pull the newest CUDA build.
  "${pip[@]}" "torch==$TORCH_VERSION" "fbgemm-gpu-cpu==$FBGEMM_VERSION"
fi
"${pip[@]}" tensordict "torchmetrics==1.0.3" tqdm pyre-extensions iopath
# The project itself, editable, with its test tools. torch is already satisfied, so this pulls
# no other torch build.
"${pip[@]}" -e ".[dev]"
# torchrec last: once it is installed, every later pip run would report its (deliberately)
# unmet fbgemm-gpu requirement as a dependency conflict.
"${pip[@]}" --no-deps "torchrec==$TORCHREC_VERSION"

"$VENV/bin/python" - <<'PY'
import torch, torchrec, fbgemm_gpu  # noqa: F401  (import check of the locked stack)
print(f"setup_env: torch {torch.__version__}, torchrec {torchrec.__version__} ready")
PY
rm -f "$VENV"/.installed-*
touch "$stamp"
