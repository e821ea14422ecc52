"""DIN activation unit: the plain ``[q, k, q-k, q*k]`` MLP over every B x L slot against ours
(factored first layer, padding skipped), forward + backward, one thread.

    python benchmarks/din_attention.py                # CPU, writes results/din_attention.json
    python benchmarks/din_attention.py --device cuda  # GPU, writes results/gpu/din_attention.json

Widths: D = 16 (id_only's query/keys) and D = 48 (em3: ID 16 + content 32). Valid share: the
fraction of the B x L history slots holding an item (0.40 on the default synthetic world's
train split, 1.0 = every user has a full history). Both forms use the same module and weights,
and their scores are checked to agree before timing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    add_device_argument,
    check_device,
    device_command,
    median_time,
    print_table,
    target,
    write_results,
)
from ranking.archs import DINAttention  # noqa: E402

BATCH, LENGTH, HIDDEN = 512, 20, (64, 32)


def plain_scores(att: DINAttention, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """The textbook DIN unit: the concatenated input built for every slot, padding included."""
    q = query.unsqueeze(1).expand_as(keys)
    return att.score(att.unit(torch.cat([q, keys, q - keys, q * keys], dim=-1))).squeeze(-1)


def case(dim: int, valid_share: float, device: str = "cpu") -> dict:
    """Times both forms at width ``dim`` with ``valid_share`` of the slots filled → one row."""
    g = torch.Generator().manual_seed(0)
    att = DINAttention(dim, HIDDEN, softmax=False, dropout=0.0, device=torch.device(device))
    query, keys = torch.randn(BATCH, dim, generator=g), torch.randn(BATCH, LENGTH, dim, generator=g)
    lengths = torch.binomial(torch.full((BATCH, 1), float(LENGTH)),
                             torch.full((BATCH, 1), valid_share), generator=g).long()
    mask = torch.arange(LENGTH)[None, :] < lengths
    query, keys, mask = query.to(device), keys.to(device), mask.to(device)
    with torch.no_grad():
        torch.testing.assert_close(att.activation_unit(query, keys, mask),
                                   plain_scores(att, query, keys) * mask)

    def step(fn) -> None:
        q, k = query.clone().requires_grad_(True), keys.clone().requires_grad_(True)
        fn(q, k).sum().backward()

    plain = median_time(lambda: [step(lambda q, k: plain_scores(att, q, k) * mask)
                                 for _ in range(10)], repeats=5, device=device) / 10
    ours = median_time(lambda: [step(lambda q, k: att.activation_unit(q, k, mask))
                                for _ in range(10)], repeats=5, device=device) / 10
    return {"dim": dim, "valid_share": round(float(mask.float().mean()), 3),
            "plain_ms": round(plain * 1e3, 3), "ours_ms": round(ours * 1e3, 3),
            "speedup": round(plain / ours, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_device_argument(parser)
    args = parser.parse_args(argv)
    check_device(args.device)
    torch.set_num_threads(1)
    rows = [case(dim, share, args.device) for dim in (16, 48) for share in (0.4, 1.0)]
    print_table(rows)
    at_default = [r for r in rows if r["valid_share"] < 0.5]
    targets = [target(f"speedup_d{r['dim']}_default_world", r["speedup"], ">=", 1.0)
               for r in at_default]
    command = device_command("din_attention.py", args.device)
    path = write_results("din_attention", rows, targets, command, device=args.device,
                         extra={"batch": BATCH, "length": LENGTH, "hidden": list(HIDDEN)})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
