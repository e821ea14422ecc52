"""Throughput and model-FLOPs utilisation (MFU), measured rather than assumed.

FLOPs per training sample are counted once with ``torch.utils.flop_counter`` on a real batch
(forward + backward). The peak is the dense bf16 figure of the GPU when one is used, and on
CPU the measured float32 matmul rate of this machine, so MFU on CPU reads as "share of what
this CPU reaches on a large matmul" (there is no vendor peak to quote for an arbitrary CPU).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

# Dense bf16 tensor-core peaks (FLOP/s, no sparsity) of GPUs we expect to meet.
GPU_PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L4": 121e12}


def count_flops(step: Callable[[], None]) -> int:
    """FLOPs of one call of ``step`` (forward + backward of one batch)."""
    with FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())


def peak_flops(device: torch.device) -> float:
    """Peak FLOP/s to measure MFU against (see module docstring)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, value in GPU_PEAK_BF16.items():
            if key in name:
                return value
    # Best of several trials: the machine may be busy with other work, and the peak is what
    # the CPU reaches when it is not.
    n, reps = 1024, 3
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 * reps / best


def mfu(flops_per_sample: float, samples_per_s: float, peak: float) -> float:
    return flops_per_sample * samples_per_s / peak if peak > 0 else 0.0
