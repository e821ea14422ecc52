"""The content path's speed levers change nothing it learns (issue 30): the query-only last
Q-Former block, the kept last history chunk, and CPU bf16 (close to float32, float32 state)."""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch

from multimodal.content import ROW_BUCKET, ItemContentEncoder
from multimodal.qformer import FusionQFormer, QFormerConfig
from multimodal.testing import count_item_passes, full_last_block
from tests.multimodal.test_mm_content import batch, encoder, grads, weighted_loss


def qformer_inputs(n: int = 6, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    vmask = torch.rand(n, 5, generator=g) > 0.3
    vmask[0] = False  # no image
    tmask = torch.rand(n, 4, generator=g) > 0.3
    tmask[1] = False  # no text
    return (torch.randn(n, 5, 6, generator=g).half(), vmask,
            torch.randn(n, 4, 7, generator=g).half(), tmask)


@pytest.mark.parametrize("layers", [1, 2])
def test_query_only_last_block_gives_the_same_outputs_and_gradients(layers):
    torch.manual_seed(0)
    cfg = QFormerConfig(vision_dim=6, text_dim=7, hidden=16, layers=layers, heads=2,
                        num_queries=3, dropout=0.0)
    full = FusionQFormer(cfg).double()
    pruned = copy.deepcopy(full)  # the default: the last block updates the query positions only
    g = torch.Generator().manual_seed(2)
    weights = torch.randn(6, 3, 16, generator=g, dtype=torch.float64)
    outs = []
    for m in (full, pruned):
        with full_last_block(m) if m is full else contextlib.nullcontext():
            queries, pooled = m(*qformer_inputs())
        ((queries * weights).sum() + pooled.pow(2).sum()).backward()
        outs.append((queries, pooled))
    for a, b in zip(outs[0], outs[1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    for (n, a), (_, b) in zip(full.named_parameters(), pruned.named_parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12, msg=n)


def test_query_only_last_block_counts_fewer_flops():
    from torch.utils.flop_counter import FlopCounterMode

    cfg = QFormerConfig(vision_dim=6, text_dim=7, hidden=16, layers=1, heads=2, num_queries=3)
    flops = {}
    for keep in (False, True):
        m = FusionQFormer(cfg)
        with (contextlib.nullcontext() if keep else full_last_block(m),
              FlopCounterMode(display=False) as counter):
            m(*qformer_inputs())
        flops[keep] = counter.get_total_flops()
    # 3 query positions of 3 + 9 keep their feed-forward and output projection.
    assert flops[True] < 0.6 * flops[False]


def rows_recomputed(model: ItemContentEncoder) -> int:
    """Items the Q-Former runs again during backward (checkpoint recomputation)."""
    target, hist, mask = batch()
    out = model(target, hist, mask)
    with count_item_passes(model) as passes:
        weighted_loss(*out).backward()
    return passes.rows


def test_lora_default_keeps_the_last_history_chunk():
    plain = encoder("lora", dtype=torch.float64, checkpoint_history=False)
    auto = encoder("lora", dtype=torch.float64)  # checkpoint_history None: lora's default
    assert auto.checkpoint_history and auto.keep_last_chunk
    every = encoder("lora", dtype=torch.float64, checkpoint_history=True)
    assert not every.keep_last_chunk
    assert rows_recomputed(auto) == 0 < rows_recomputed(every)  # one chunk: kept
    for m in (plain, auto):
        m.history_chunk = 2  # several chunks: all but the last recomputed
    with torch.no_grad():
        for p in plain.adapter_parameters() + auto.adapter_parameters():
            p.fill_(0.05)
    plain.zero_grad(), auto.zero_grad()
    target, hist, mask = batch()
    unique_history = int(torch.unique(hist[mask]).numel())
    assert rows_recomputed(plain) == 0
    assert rows_recomputed(auto) == unique_history - (unique_history - 1) % 2 - 1
    outs = [m(target, hist, mask) for m in (plain, auto)]
    torch.testing.assert_close(outs[0][1], outs[1][1], rtol=1e-12, atol=1e-12)
    for (n, a), (_, b) in zip(grads(plain).items(), grads(auto).items(), strict=True):
        assert (a is None) == (b is None), n
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=n)


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_cpu_bf16_is_close_to_float32_and_state_stays_float32(mode):
    fp32 = encoder(mode)
    bf16 = copy.deepcopy(fp32)
    bf16.cpu_bf16 = True
    target, hist, mask = batch()
    outs = {}
    for name, m in (("fp32", fp32), ("bf16", bf16)):
        opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
        out = m(target, hist, mask)
        assert all(t.dtype == torch.float32 for t in out)  # the ranking model gets float32
        weighted_loss(*out).backward()
        opt.step()
        outs[name] = out
        assert all(p.dtype == torch.float32 for p in m.parameters())
        assert all(p.grad.dtype == torch.float32 for p in m.parameters() if p.grad is not None)
        assert all(t.dtype == torch.float32 for s in opt.state.values() for t in s.values()
                   if t.is_floating_point())
    for a, b in zip(outs["fp32"], outs["bf16"], strict=True):
        # LayerNorm outputs of unit scale: bf16 keeps ~3 significant digits.
        torch.testing.assert_close(b, a, rtol=0.05, atol=0.05)
        assert not torch.equal(a, b)  # bf16 really ran
    # Masked history positions stay exactly zero.
    assert torch.count_nonzero(outs["bf16"][1][~mask]) == 0


def test_cpu_bf16_pads_item_rows_to_the_bucket_and_drops_the_padding():
    m = encoder("frozen")
    m.cpu_bf16 = True
    rows = torch.tensor([3, 1, 4])
    with count_item_passes(m) as passes, torch.no_grad():
        padded = m.encode_items(rows)
    assert passes.rows == ROW_BUCKET and padded.shape == (3, m.hidden)
    with torch.no_grad():
        alone = torch.cat([m.encode_items(rows[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(padded, alone, rtol=0, atol=0)  # items never mix


def test_cpu_bf16_runs_the_qformer_matmuls_in_bf16():
    from torch.utils._python_dispatch import TorchDispatchMode

    seen: set[torch.dtype] = set()
    matmuls = {torch.ops.aten.addmm.default, torch.ops.aten.mm.default,
               torch.ops.aten.bmm.default}

    class MatmulDtypes(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func in matmuls:
                seen.add(args[-1].dtype)
            return func(*args, **(kwargs or {}))

    m = encoder("frozen")
    for bf16, want in ((False, {torch.float32}), (True, {torch.bfloat16})):
        m.cpu_bf16 = bf16
        seen.clear()
        with MatmulDtypes(), torch.no_grad():
            m.encode_items(torch.arange(4))
        assert seen == want
