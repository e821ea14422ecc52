"""Sequence modes of the content path: frozen / lora / full, with and without dedup.

A training step of ``ItemContentEncoder`` (target + history content, a DIN-like logit, BCE,
backward, AdamW) on batch 256 with histories of length L ∈ {10, 50, 200}, item ids drawn from a
Zipf(1.1) popularity over 50k items. Every case runs in its own process so that its peak memory
is its own. Measured per case: median step time, peak memory of the step above the process's
resident baseline, Q-Former item passes per batch and trainable parameter counts.

    python benchmarks/sequence_modes.py            # all cases, writes results/sequence_modes.json
    python benchmarks/sequence_modes.py --quick    # L=10 only, a smoke run (no results file)
    python benchmarks/sequence_modes.py --device cuda   # on the GPU, under bf16 autocast as in
                                                        # training; writes results/gpu/

On CUDA the memory columns are the CUDA caching allocator's peak of allocated memory
(``torch.cuda.max_memory_allocated``) above what the process held before the first step.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import (  # noqa: E402
    add_device_argument,
    check_device,
    device_command,
    median_time,
    print_table,
    synchronize,
    target,
    write_results,
)
from multimodal.content import ItemContentEncoder  # noqa: E402
from multimodal.lora_sequence import LoraSettings  # noqa: E402
from multimodal.qformer import QFormerConfig  # noqa: E402
from multimodal.testing import ItemPasses, count_item_passes  # noqa: E402
from multimodal.tokens import TokenTensors  # noqa: E402

ITEMS, BATCH, ZIPF = 50_000, 256, 1.1
SEQ_LENS = (10, 50, 200)
MODES = ("frozen", "lora", "full")
# CPU-sized model: the naive L=200 case pushes 51k items through the Q-Former per step.
TOKENS_V, TOKENS_T, DIM_V, DIM_T = 4, 4, 64, 64
QFORMER = QFormerConfig(vision_dim=DIM_V, text_dim=DIM_T, variant="self", hidden=64, layers=2,
                        heads=4, num_queries=4, dropout=0.0)
LORA = LoraSettings(r=8, alpha=16, dropout=0.0, targets=("query", "value"))
HISTORY_CHUNK = 1024
SLOW_STEP_S = 5.0


def synthetic_tokens(seed: int = 0) -> TokenTensors:
    """50k items of fp16 token features; 10% without image, 5% without text."""
    g = torch.Generator().manual_seed(seed)
    vision = torch.randn(ITEMS, TOKENS_V, DIM_V, generator=g).half()
    text = torch.randn(ITEMS, TOKENS_T, DIM_T, generator=g).half()
    vmask = (torch.rand(ITEMS, generator=g) > 0.10)[:, None].expand(ITEMS, TOKENS_V).clone()
    tmask = torch.rand(ITEMS, TOKENS_T, generator=g) > 0.05
    return TokenTensors(vision * vmask[..., None], vmask, text * tmask[..., None], tmask)


def zipf_batch(seq_len: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(target B, history B x L, mask B x L all True): ids ~ Zipf(1.1) over the item ranks."""
    rng = np.random.default_rng(seed)
    p = np.arange(1, ITEMS + 1, dtype=np.float64) ** -ZIPF
    p /= p.sum()
    items = rng.permutation(ITEMS)  # popularity rank -> item row, so row order carries nothing
    target = torch.from_numpy(items[rng.choice(ITEMS, BATCH, p=p)])
    hist = torch.from_numpy(items[rng.choice(ITEMS, (BATCH, seq_len), p=p)])
    return target, hist, torch.ones(BATCH, seq_len, dtype=torch.bool)


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> float:
    """Returns the resident MiB after releasing free heap memory and resetting the peak."""
    gc.collect()
    with contextlib.suppress(OSError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM := VmRSS
    return _status_mb("VmRSS")


def _reset_cuda_peak() -> float:
    """Returns the MiB the CUDA allocator holds for tensors now, after resetting its peak."""
    synchronize("cuda")
    torch.cuda.reset_peak_memory_stats()
    return torch.cuda.memory_allocated() / 2**20


def run_case(mode: str, seq_len: int, dedup: bool, checkpoint: bool, repeats: int,
             threads: int, device: str = "cpu") -> dict:
    """One case in this process → its row (time, peak memory above baseline, passes, params)."""
    # One thread by default: on a shared 2-core machine, OpenMP barriers of 2 threads competing
    # with other processes made step times swing by 3x; one thread gives comparable numbers.
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    tokens = synthetic_tokens()  # stays in host memory, as in training; rows are gathered
    enc = ItemContentEncoder(tokens, QFORMER, seq_mode=mode, lora=LORA, dedup=dedup,
                             checkpoint_history=checkpoint,
                             history_chunk=HISTORY_CHUNK).to(device).train()
    opt = torch.optim.AdamW([p for p in enc.parameters() if p.requires_grad], lr=1e-3)
    target, hist, mask = (t.to(device) for t in zipf_batch(seq_len))
    labels = (torch.arange(BATCH, device=device) % 2).float()
    # The trainer's precision: bf16 autocast on CUDA (recsys/training/train.py), fp32 on CPU.
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda")

    def step(count: bool = False) -> int:
        """One training step → the Q-Former item passes of its forward with ``count`` (the
        timed steps run without the hook), else 0. A checkpointed history's recomputation
        in backward is not a new pass, so only the forward is counted."""
        counting = count_item_passes(enc) if count else contextlib.nullcontext(ItemPasses())
        with autocast, counting as passes:
            t, h = enc(target, hist, mask)
            interest = h.sum(1) / mask.sum(1, keepdim=True)  # mean history content (B x d)
            logits = (t * interest).sum(-1).float()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return passes.rows

    baseline = _reset_cuda_peak() if device == "cuda" else _reset_peak()
    t0 = time.perf_counter()
    # Warm-up (allocator, optimizer state): its memory counts, its time does not. Every step
    # encodes the same batch, so its item passes are every step's.
    item_passes = step(count=True)
    synchronize(device)
    if time.perf_counter() - t0 > SLOW_STEP_S:
        repeats = 1  # the naive L=200 steps: one timed step keeps the whole run in minutes
    seconds = median_time(step, repeats=repeats, warmup=0, device=device)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda"
            else _status_mb("VmHWM"))
    return {
        "mode": mode, "seq_len": seq_len, "dedup": dedup, "checkpoint": checkpoint,
        "step_s": round(seconds, 4), "timed_steps": repeats, "peak_mem_mb": round(peak - baseline, 1),
        "process_peak_mb": round(peak, 1), "item_passes": item_passes,
        "trainable_params": enc.trainable_parameter_count(),
        "sequence_trainable_params": sum(p.numel() for p in enc.sequence_parameters()),
    }


def _spawn(mode: str, seq_len: int, dedup: bool, checkpoint: bool, repeats: int,
           threads: int, device: str) -> dict:
    cmd = [sys.executable, __file__, "--case", mode, str(seq_len), str(int(dedup)),
           str(int(checkpoint)), "--repeats", str(repeats), "--threads", str(threads),
           "--device", device]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"case {cmd[3:]} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _row(rows: list[dict], **match) -> dict:
    return next(r for r in rows if all(r[k] == v for k, v in match.items()))


def targets_of(rows: list[dict]) -> list[dict]:
    lora = _row(rows, mode="lora", seq_len=200, dedup=True, checkpoint=True)
    full = _row(rows, mode="full", seq_len=200, dedup=True, checkpoint=False)
    naive = _row(rows, mode="lora", seq_len=200, dedup=False, checkpoint=True)
    return [
        target("lora_sequence_trainable_ratio", lora["sequence_trainable_params"]
               / full["sequence_trainable_params"], "<=", 0.05),
        target("lora_peak_memory_ratio_L200", lora["peak_mem_mb"] / full["peak_mem_mb"], "<=", 0.6),
        target("dedup_item_pass_reduction_L200", naive["item_passes"] / lora["item_passes"], ">=", 3.0),
    ]


def markdown(rows: list[dict]) -> str:
    head = ("| mode | L | dedup | ckpt | step s | peak MiB | item passes | trainable | seq. trainable |\n"
            "|---|---|---|---|---|---|---|---|---|")
    lines = [f"| {r['mode']} | {r['seq_len']} | {'yes' if r['dedup'] else 'no'} | "
             f"{'yes' if r['checkpoint'] else 'no'} | {r['step_s']:.3f} | {r['peak_mem_mb']:.0f} | "
             f"{r['item_passes']} | {r['trainable_params']} | {r['sequence_trainable_params']} |"
             for r in rows]
    return "\n".join([head, *lines])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", nargs=4, metavar=("MODE", "L", "DEDUP", "CKPT"), help=argparse.SUPPRESS)
    ap.add_argument("--repeats", type=int, default=3, help="timed steps per case (median)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per case (default 1)")
    ap.add_argument("--quick", action="store_true", help="L=10 only; no results file")
    add_device_argument(ap)
    args = ap.parse_args(argv)
    check_device(args.device)
    if args.case:
        mode, seq_len, dedup, ckpt = args.case
        print(json.dumps(run_case(mode, int(seq_len), dedup == "1", ckpt == "1", args.repeats,
                                  args.threads, args.device)))
        return
    cases = [(m, n, d, m == "lora") for n in ((10,) if args.quick else SEQ_LENS)
             for m in MODES for d in (True, False)]
    if not args.quick:  # ablations: where the lora memory saving comes from
        cases += [("lora", 200, True, False), ("full", 200, True, True)]
    rows = []
    for case in cases:
        rows.append(_spawn(*case, repeats=args.repeats, threads=args.threads,
                           device=args.device))
        print_table(rows[-1:], list(rows[-1]))
    print_table(rows, ["mode", "seq_len", "dedup", "checkpoint", "step_s", "peak_mem_mb",
                       "item_passes", "trainable_params", "sequence_trainable_params"])
    print(markdown(rows))
    if args.quick:
        return
    found = targets_of(rows)
    print_table(found)
    memory = ("the peak of CUDA memory allocated (torch.cuda.max_memory_allocated) during "
              "warm-up + timed steps above what was allocated before, under bf16 autocast"
              if args.device == "cuda" else
              "the peak RSS of warm-up + timed steps above the resident baseline (VmHWM reset "
              "via clear_refs)")
    notes = (f"CPU-sized Q-Former (d=64, 2 layers, K=4, 4+4 tokens) on {args.device}, "
             f"{args.threads} torch thread(s); step_s is the median of {args.repeats} steps after "
             f"a warm-up (1 step when the warm-up took over {SLOW_STEP_S:.0f} s); peak_mem_mb is "
             f"{memory}; lora rows checkpoint the history in chunks of 1024 items unless marked; "
             "the last two L=200 rows are ablations (lora without, full with checkpointing).")
    command = device_command("sequence_modes.py", args.device)
    write_results("sequence_modes", rows, found, command, device=args.device,
                  extra={"config": {"qformer": QFORMER.to_dict(), "lora": LORA.to_dict(),
                                    "items": ITEMS, "batch": BATCH, "zipf": ZIPF,
                                    "history_chunk": HISTORY_CHUNK, "threads": args.threads},
                         "notes": notes})


if __name__ == "__main__":
    main()
