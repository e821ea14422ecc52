#!/usr/bin/env bash
# GPU readiness check (issue 30): on a machine with CUDA, within 8 minutes,
#   1. the content path and the dense tower, float32 and bf16 (benchmarks/device_precision.py
#      --device cuda), into benchmarks/results/gpu/device_precision.json;
#   2. where TorchRec and a CUDA build of fbgemm-gpu are installed, a sharded id_only training
#      run under nccl (recsys train through torchrun, one process per GPU, a fixed number of
#      steps on the synthetic world), its throughput into benchmarks/results/gpu/gpu_check.json;
#      otherwise a line saying why it cannot run.
# Without CUDA it runs its CPU fallback: the same steps on CPU (the benchmark with --quick, the
# id_only run under gloo) into $GPU_CHECK_OUT (default benchmarks/.data/gpu_check), never into
# benchmarks/results/, so that the script itself is exercised where no GPU is lent
# (tests/benchmarks/test_gpu_check.py).
#
#   benchmarks/gpu_check.sh
# Environment: PYTHON (default .venv/bin/python, else python3), GPU_CHECK_OUT,
# GPU_CHECK_DATA (a prepared dataset directory for step 2; default: the synthetic world,
# generated under benchmarks/.data/synth when absent), GPU_CHECK_STEPS (training steps of
# step 2, default 200), GPU_CHECK_BUDGET_S (default 450: the whole check within 8 minutes).
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
BUDGET=${GPU_CHECK_BUDGET_S:-450}
STEPS=${GPU_CHECK_STEPS:-200}
START=$SECONDS
left() { echo $(( BUDGET - (SECONDS - START) )); }

DEVICE=$("$PY" -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")' 2>/dev/null)
if [ -z "$DEVICE" ]; then
  echo "gpu_check: $PY cannot import torch; nothing to check" >&2
  exit 2
fi
if [ "$DEVICE" = cuda ]; then
  OUT=${GPU_CHECK_OUT:-benchmarks/results/gpu}
  GPUS=$("$PY" -c 'import torch; print(torch.cuda.device_count())')
  echo "gpu_check: CUDA device: $("$PY" -c 'import torch; print(torch.cuda.get_device_name(0))') x $GPUS"
  QUICK=()
  EXTRA_SETS=()
else
  OUT=${GPU_CHECK_OUT:-benchmarks/.data/gpu_check}
  GPUS=1
  echo "gpu_check: no CUDA device visible to torch: CPU fallback (quick runs on CPU, results in $OUT, not benchmarks/results/gpu)"
  QUICK=(--quick)
  # A smoke run: compiling the dense tower would be most of its time.
  EXTRA_SETS=(--set train.compile=off)
fi
mkdir -p "$OUT"
status=0

# 1. Content path and dense tower, fp32 and bf16.
echo "gpu_check: [1/2] content path and dense tower, fp32 vs bf16 ($DEVICE)"
if timeout "$(( $(left) / 2 ))" "$PY" benchmarks/device_precision.py --device "$DEVICE" \
     "${QUICK[@]}" --out "$OUT"; then
  bench=ok
else
  bench="failed (exit $?)"; status=1
fi
echo "gpu_check: [1/2] $bench"

# 2. A sharded id_only training run: nccl on CUDA (needs TorchRec + CUDA fbgemm-gpu), gloo on
# the CPU fallback.
sharded_why=$("$PY" - "$DEVICE" <<'EOF'
import sys
device = sys.argv[1]
try:
    import torch
    import fbgemm_gpu  # noqa: F401
    import torchrec  # noqa: F401
except ImportError as err:
    print(f"TorchRec / fbgemm-gpu are not installed ({err})")
    raise SystemExit
if device == "cuda":
    try:
        torch.ops.fbgemm.asynchronous_complete_cumsum(torch.ones(2, dtype=torch.int64, device="cuda"))
    except Exception as err:  # a CPU-only fbgemm-gpu wheel
        print(f"fbgemm-gpu has no CUDA kernels here ({type(err).__name__}: {str(err)[:120]})")
EOF
)
backend=$([ "$DEVICE" = cuda ] && echo nccl || echo gloo)
if [ -n "$sharded_why" ]; then
  echo "gpu_check: [2/2] cannot run the sharded id_only step under $backend: $sharded_why"
  sharded="cannot run: $sharded_why"
else
  echo "gpu_check: [2/2] sharded id_only training under $backend, $GPUS process(es), $STEPS steps"
  DATA=${GPU_CHECK_DATA:-}
  if [ -z "$DATA" ]; then
    DATA=$("$PY" -c 'from benchmarks.quality_runs import dataset_dir; print(dataset_dir("synth"))')
  fi
  RUN="$OUT/id_only_sharded"
  rm -rf "$RUN"
  if timeout "$(( $(left) - 10 ))" "$PY" -m torch.distributed.run --standalone \
       --nproc_per_node="$GPUS" -m recsys train id_only --data "$DATA" --out "$RUN" --no-track \
       --quiet --set train.epochs=1 --set "train.max_steps_per_epoch=$STEPS" \
       --set train.checkpoint_every=0 "${EXTRA_SETS[@]}"; then
    sharded=ok
  else
    sharded="failed (exit $?)"; status=1
  fi
  echo "gpu_check: [2/2] $sharded"
fi

"$PY" - "$OUT" "$DEVICE" "$backend" "$bench" "$sharded" "$(( SECONDS - START ))" <<'EOF'
import json, sys
from pathlib import Path
out, device, backend, bench, sharded, seconds = sys.argv[1:]
sys.path.insert(0, ".")
from benchmarks.common import machine
record = {"benchmark": "gpu_check", "command": "benchmarks/gpu_check.sh", "device": device,
          "machine": machine(), "seconds": int(seconds),
          "device_precision": bench, "sharded_id_only": {"backend": backend, "status": sharded}}
metrics = Path(out) / "id_only_sharded" / "metrics.json"
if metrics.is_file():
    m = json.loads(metrics.read_text())
    record["sharded_id_only"]["throughput"] = m.get("throughput")
path = Path(out) / "gpu_check.json"
path.write_text(json.dumps(record, indent=2) + "\n")
print(f"gpu_check: wrote {path} ({seconds} s)")
EOF
exit $status
