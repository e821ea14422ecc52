"""The content path and the dense tower on a device, float32 against bf16 (issue 30, GPU
readiness): what ``benchmarks/gpu_check.sh`` runs on a CUDA machine.

* content path: a training step of ``ItemContentEncoder`` (targets + LoRA history, a logit
  per row, BCE, backward, AdamW) on batch 512 with histories of length 20 (40% of the slots
  filled), item rows drawn from a Zipf(1.1) popularity over ``ITEMS`` items, at two Q-Former
  sizes: ``em3`` (the preset: hidden 32, one layer, tiny towers' 13 + 16 tokens of width 32)
  and ``wide`` (``QFormerConfig``'s defaults over 49 + 32 tokens of widths 2048 and 384, the
  real towers' shapes);
* dense tower: the DIN activation unit (``ranking.archs.DINAttention``) over the valid history
  slots at em3's width (ID 16 + content 32), forward + backward. It needs TorchRec to import
  (``ranking.archs``); without it the row says why it was skipped.

Precisions: ``fp32``, and ``bf16``: ``torch.autocast("cuda", bfloat16)`` on a GPU, as the
trainer runs a GPU step; on CPU the content path's own ``cpu_bf16`` (``content.cpu_precision =
"bf16"``) and CPU autocast for the tower. Weights and optimizer state stay float32.

    python benchmarks/device_precision.py --device cuda   # writes results/gpu/device_precision.json
    python benchmarks/device_precision.py --quick --out /tmp/x   # CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import nullcontext
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import (  # noqa: E402
    add_device_argument,
    check_device,
    device_command,
    machine,
    median_time,
    print_table,
    write_results,
)

BATCH, LENGTH, VALID, ITEMS = 512, 20, 0.4, 5000
SIZES = {"em3": {"hidden": 32, "layers": 1, "heads": 2, "num_queries": 4,
                 "vision": (13, 32), "text": (16, 32)},
         "wide": {"hidden": 256, "layers": 2, "heads": 4, "num_queries": 8,
                  "vision": (49, 2048), "text": (32, 384)}}


def autocast(device: str, bf16: bool):
    """The trainer's GPU autocast; on CPU the tower's CPU autocast."""
    return torch.autocast(device, dtype=torch.bfloat16, enabled=bf16)


def content_case(size: str, bf16: bool, device: str, steps: int) -> dict:
    """Median seconds of one content-path training step → a row."""
    try:
        from multimodal.content import ItemContentEncoder
        from multimodal.lora_sequence import LoraSettings
        from multimodal.qformer import QFormerConfig
        from multimodal.tokens import TokenTensors
    except ImportError as err:  # peft / transformers are not installed here
        return {"part": "content path", "size": size, "precision": "bf16" if bf16 else "fp32",
                "skipped": f"multimodal.content does not import: {err}"}

    s = SIZES[size]
    g = torch.Generator().manual_seed(0)
    (tv, dv), (tt, dt) = s["vision"], s["text"]
    tokens = TokenTensors(torch.randn(ITEMS, tv, dv, generator=g).half(),
                          torch.rand(ITEMS, tv, generator=g) > 0.1,
                          torch.randn(ITEMS, tt, dt, generator=g).half(),
                          torch.rand(ITEMS, tt, generator=g) > 0.3)
    cfg = QFormerConfig(vision_dim=dv, text_dim=dt, hidden=s["hidden"], layers=s["layers"],
                        heads=s["heads"], num_queries=s["num_queries"], dropout=0.0)
    torch.manual_seed(0)
    enc = ItemContentEncoder(tokens, cfg, seq_mode="lora", lora=LoraSettings(r=4, alpha=8),
                             cpu_bf16=bf16 and device == "cpu").to(device)
    head = torch.nn.Linear(2 * s["hidden"], 1).to(device)
    opt = torch.optim.AdamW([*enc.parameters(), *head.parameters()], lr=1e-3)
    popularity = 1.0 / torch.arange(1, ITEMS + 1, dtype=torch.float64) ** 1.1
    target = torch.multinomial(popularity, BATCH, replacement=True, generator=g)
    hist = torch.multinomial(popularity, BATCH * LENGTH, replacement=True,
                             generator=g).view(BATCH, LENGTH)
    mask = torch.rand(BATCH, LENGTH, generator=g) < VALID
    hist, labels = hist * mask, (torch.rand(BATCH, generator=g) < 0.3).float().to(device)

    def step() -> None:
        with autocast(device, bf16) if device == "cuda" else nullcontext():
            t, h = enc(target, hist, mask)
            m = mask.to(device).unsqueeze(-1)
            pooled = (h * m).sum(1) / m.sum(1).clamp(min=1)
            logit = head(torch.cat([t, pooled], dim=-1)).squeeze(-1).float()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    seconds = median_time(step, repeats=steps, warmup=2, device=device)
    assert all(p.dtype == torch.float32 for p in enc.parameters())
    return {"part": "content path", "size": size, "precision": "bf16" if bf16 else "fp32",
            "step_ms": round(seconds * 1e3, 3), "samples_per_s": round(BATCH / seconds, 1)}


def tower_case(bf16: bool, device: str, steps: int) -> dict:
    """Median seconds of the DIN unit's forward + backward over the valid slots → a row."""
    try:
        from ranking.archs import DINAttention
    except ImportError as err:  # TorchRec (or its fbgemm) is not installed here
        return {"part": "dense tower", "size": "em3", "precision": "bf16" if bf16 else "fp32",
                "skipped": f"ranking.archs does not import: {err}"}
    dim = 16 + 32
    g = torch.Generator().manual_seed(0)
    att = DINAttention(dim, (64, 32), softmax=False, dropout=0.0, device=torch.device(device),
                       padded_positions=bf16 and device == "cpu")
    query = torch.randn(BATCH, dim, generator=g).to(device)
    keys = torch.randn(BATCH, LENGTH, dim, generator=g).to(device)
    mask = (torch.rand(BATCH, LENGTH, generator=g) < VALID).to(device)

    def step() -> None:
        q, k = query.clone().requires_grad_(True), keys.clone().requires_grad_(True)
        with autocast(device, bf16):
            out = att.activation_unit(q, k, mask)
        out.float().sum().backward()

    seconds = median_time(step, repeats=steps, warmup=2, device=device)
    return {"part": "dense tower", "size": "em3", "precision": "bf16" if bf16 else "fp32",
            "step_ms": round(seconds * 1e3, 3), "samples_per_s": round(BATCH / seconds, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_device_argument(parser)
    parser.add_argument("--quick", action="store_true",
                        help="the em3 size only, 2 timed steps (a smoke run)")
    parser.add_argument("--out", type=Path, default=None,
                        help="results folder (default results/ on CPU, results/gpu/ on CUDA)")
    args = parser.parse_args(argv)
    check_device(args.device)
    torch.set_num_threads(1)
    steps = 2 if args.quick else 10
    sizes = ["em3"] if args.quick else list(SIZES)
    rows = [content_case(size, bf16, args.device, steps) for size in sizes for bf16 in (False, True)]
    rows += [tower_case(bf16, args.device, steps) for bf16 in (False, True)]
    for r in rows:
        fp32 = next((x for x in rows if (x["part"], x["size"], x["precision"])
                     == (r["part"], r["size"], "fp32")), None)
        if "step_ms" in r and fp32 is not None and "step_ms" in fp32:
            r["bf16_speedup"] = round(fp32["step_ms"] / r["step_ms"], 3)
    print_table(rows, ["part", "size", "precision", "step_ms", "samples_per_s", "bf16_speedup",
                       "skipped"])
    extra = {"batch": BATCH, "length": LENGTH, "valid_share": VALID, "sizes": SIZES}
    command = device_command("device_precision.py", args.device)
    if args.out is None:
        path = write_results("device_precision", rows, [], command, extra, device=args.device)
    else:  # tests and gpu_check.sh's CPU fallback: never the repository's results
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / "device_precision.json"
        path.write_text(json.dumps({"benchmark": "device_precision", "command": command,
                                    "machine": machine(), "device": args.device,
                                    "rows": rows, "targets": [], **extra}, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
