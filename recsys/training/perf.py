"""Throughput and model-FLOPs utilisation (MFU), measured rather than assumed.

FLOPs per training sample are counted once with ``torch.utils.flop_counter`` on a real batch
(forward + backward). The peak is the dense bf16 figure of the GPU when one is used, and on
CPU the measured float32 matmul rate of this machine, so MFU on CPU reads as "share of what
this CPU reaches on a large matmul" (there is no vendor peak to quote for an arbitrary CPU).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

# Dense bf16 tensor-core peaks (FLOP/s, no sparsity) of GPUs we expect to meet.
GPU_PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L4": 121e12}


# Set to "off" to leave malloc as the process found it (per process, hence not a config key).
MALLOC_TUNING_ENV = "RECSYS_MALLOC_TUNING"
# glibc mallopt() parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD = 32 << 20  # the largest value glibc accepts on 64-bit (HEAP_MAX_SIZE / 2)
_TRIM_THRESHOLD = 1 << 30


def keep_freed_memory() -> bool:
    """Makes glibc's malloc keep freed blocks of up to 32 MB for reuse; True when applied.

    Why: a CPU training step allocates and frees many activation and gradient tensors of a few
    MB (the DIN unit's N x 64 inputs, N in the thousands of history slots per MovieLens
    batch). glibc adapts its mmap threshold to the sizes it sees, but on such a mix it keeps
    serving some of them with fresh mmaps or trimming them back to the kernel, and every step
    pays page faults to zero the same memory again. With this setting the faults per
    ``id_only`` step on MovieLens nearly vanish and the eager step is shorter (no change on the
    synthetic world, where glibc's adaptation already settles); the compiled dense tower (the
    CPU default) allocates far fewer such temporaries, and there the two are level
    (docs/training.md, "Throughput and MFU", has the measurements). PyTorch's CPU
    tuning guide gets the same effect by preloading jemalloc or tcmalloc. The cost: the
    process keeps up to that much freed memory for reuse. Does nothing (False) off Linux,
    without glibc, or when the environment says ``RECSYS_MALLOC_TUNING=off`` (e.g. with
    jemalloc or tcmalloc preloaded, or to measure glibc's defaults).
    """
    if not sys.platform.startswith("linux") or os.environ.get(MALLOC_TUNING_ENV) == "off":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and \
        bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))


def count_flops(step: Callable[[], None]) -> int:
    """FLOPs of one call of ``step`` (forward + backward of one batch).

    Compiled code (the ranking model's dense tower, ``train.compile``) runs eagerly inside:
    Dynamo does not trace under ``FlopCounterMode``, and a first call made there left the
    tower eager, and every later step at its eager time, for the rest of the run
    (docs/ranking.md, "Architecture", the ``torch.compile`` item). ``force_eager`` runs the
    original function and leaves the compiled one untouched for the next call.
    """
    with torch.compiler.set_stance("force_eager"), FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())


def peak_flops(device: torch.device, dtype: torch.dtype = torch.float32,
               clock: Callable[[], float] = time.perf_counter) -> float:
    """Peak FLOP/s to measure MFU against (see module docstring).

    On CPU, ``dtype`` is the precision of the matmul measured: ``torch.bfloat16`` gives the
    peak of a step whose matmuls run under bf16 autocast (where the CPU has native bf16 it is
    several times the float32 one, so MFU against it is the honest reading of such a step).
    On a GPU the bf16 tensor-core peak is returned whatever ``dtype`` says. ``clock``: what the
    matmuls are timed with (a benchmark that times its steps in thread CPU time passes
    ``time.thread_time``, so both are read the same way on a busy machine).
    """
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, value in GPU_PEAK_BF16.items():
            if key in name:
                return value
    # Best of several trials: the machine may be busy with other work, and the peak is what
    # the CPU reaches when it is not.
    n, reps = 1024, 3
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(5):
        t0 = clock()
        for _ in range(reps):
            a @ b
        best = min(best, clock() - t0)
    return 2 * n**3 * reps / best


def mfu(flops_per_sample: float, samples_per_s: float, peak: float) -> float:
    return flops_per_sample * samples_per_s / peak if peak > 0 else 0.0


def compile_unavailable(device: torch.device) -> str | None:
    """Why ``torch.compile`` (Inductor) cannot build kernels for ``device``; None when it can.

    On CPU Inductor writes C++ and needs a compiler (g++ or ``$CXX``); on CUDA it needs Triton.
    """
    if device.type == "cpu":
        try:
            from torch._inductor.cpp_builder import get_cpp_compiler

            get_cpp_compiler()
        except Exception as err:  # noqa: BLE001 - Inductor raises its own types for this
            return f"Inductor found no C++ compiler ({type(err).__name__}: {err})".strip()
        return None
    if device.type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return "Inductor needs Triton on CUDA and it is not installed"
        return None
    return f"Inductor has no backend for device {device.type!r}"


def use_compile(mode: str, device: torch.device) -> tuple[bool, str]:
    """Whether to compile the dense tower (``train.compile``), and a line saying why.

    ``"auto"`` compiles on CPU where a C++ compiler is found, which is where the gain was
    measured (``benchmarks/train_step.py``); on CUDA it stays eager until that is measured
    there. ``"on"`` compiles on any device and raises ``ValueError`` if it cannot;
    ``"off"`` never compiles.
    """
    if mode == "off":
        return False, "dense tower: eager (train.compile = \"off\")"
    missing = compile_unavailable(device)
    if mode == "on":
        if missing:
            raise ValueError(f"train.compile = \"on\" but {missing}; set train.compile to "
                             "\"auto\" or \"off\"")
        return True, "dense tower: torch.compile (train.compile = \"on\")"
    if missing:
        return False, f"dense tower: eager ({missing})"
    if device.type != "cpu":
        return False, ("dense tower: eager (train.compile = \"auto\" compiles on CPU only; "
                       "\"on\" compiles here too)")
    return True, ("dense tower: torch.compile (the first training and the first evaluation "
                  "batch compile it; cached for later runs)")
