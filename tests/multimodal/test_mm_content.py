"""ItemContentEncoder: sequence modes, LoRA gradient routing, dedup and checkpoint equivalence."""

from __future__ import annotations

import copy

import pytest
import torch

from multimodal.content import ItemContentEncoder
from multimodal.lora_sequence import LoraSettings
from multimodal.qformer import QFormerConfig
from multimodal.testing import count_item_passes
from multimodal.tokens import TokenTensors

N, B, L = 12, 5, 6


def tokens(dtype: torch.dtype = torch.float16) -> TokenTensors:
    g = torch.Generator().manual_seed(3)
    vmask = torch.rand(N, 4, generator=g) > 0.2
    vmask[2] = False  # item 2 has no image
    return TokenTensors(torch.randn(N, 4, 6, generator=g).to(dtype), vmask,
                        torch.randn(N, 5, 7, generator=g).to(dtype), torch.rand(N, 5, generator=g) > 0.2)


def encoder(mode: str, variant: str = "self", dtype: torch.dtype = torch.float32,
            **kw) -> ItemContentEncoder:
    torch.manual_seed(0)
    cfg = QFormerConfig(vision_dim=6, text_dim=7, variant=variant, hidden=16, layers=2, heads=2,
                        num_queries=3, dropout=0.0)
    lora = LoraSettings(r=2, alpha=4, targets=("query", "value", "fc1"))
    return ItemContentEncoder(tokens(), cfg, seq_mode=mode, lora=lora, **kw).to(dtype)


def batch(seed: int = 5):
    g = torch.Generator().manual_seed(seed)
    # Few distinct items so that both paths repeat items within and across rows.
    target = torch.randint(0, 4, (B,), generator=g)
    hist = torch.randint(0, 6, (B, L), generator=g)
    mask = torch.rand(B, L, generator=g) > 0.3
    mask[0] = False  # a user without history
    hist = hist * mask  # masked positions hold row 0, as Batch does
    return target, hist, mask


def weighted_loss(target_emb, hist_emb, seed: int = 9):
    # Random weights: a plain sum of LayerNorm outputs has zero gradient by construction.
    g = torch.Generator().manual_seed(seed)
    wt = torch.randn(target_emb.shape, generator=g).to(target_emb.dtype)
    wh = torch.randn(hist_emb.shape, generator=g).to(hist_emb.dtype)
    return (target_emb * wt).sum() + (hist_emb * wh).sum()


def grads(model: torch.nn.Module) -> dict[str, torch.Tensor | None]:
    return {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}


def test_shapes_and_masked_positions_are_zero():
    model = encoder("lora")
    target, hist, mask = batch()
    t, h = model(target, hist, mask)
    assert t.shape == (B, 16) and h.shape == (B, L, 16)
    assert torch.equal(h[~mask], torch.zeros_like(h[~mask]))
    assert (h[mask].abs().sum(-1) > 0).all()
    assert torch.isfinite(t).all() and torch.isfinite(h).all()


@pytest.mark.parametrize("checkpoint", [True, False])
def test_lora_history_loss_trains_adapters_only_and_leaves_base_unchanged(checkpoint):
    model = encoder("lora", checkpoint_history=checkpoint, history_chunk=3).train()
    target, hist, mask = batch()
    base = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(2):  # two steps: lora_A's gradient is zero until lora_B leaves its zero init
        opt.zero_grad()
        _, h = model(target, hist, mask)
        weighted_loss(torch.zeros(1), h).backward()
        g = grads(model)
        assert all(g[n] is None for n in base), "a history loss must not reach base weights"
        assert all(g[n] is not None for n in g if "lora_" in n)
        opt.step()
    assert all(g[n].abs().sum() > 0 for n in g if "lora_" in n)
    assert all(torch.equal(p, base[n]) for n, p in model.named_parameters() if n in base)
    assert len(model.adapter_parameters()) == 2 * 3 * 2  # (A, B) x 3 targets x 2 layers


def test_lora_target_uses_base_weights_and_history_uses_adapters():
    model = encoder("lora")
    target, hist, mask = batch()
    t, h = model(target, hist, mask)
    # At init lora_B = 0: base+LoRA equals base, so history and target agree on shared items.
    same = model.encode_items(target, history=True)
    torch.testing.assert_close(same, t, rtol=0, atol=1e-6)
    with torch.no_grad():
        for p in model.adapter_parameters():
            p.add_(0.3)
    t2, _ = model(target, hist, mask)
    torch.testing.assert_close(t2, t, rtol=0, atol=1e-6)  # target path ignores the adapters
    assert not torch.allclose(model.encode_items(target, history=True), t, atol=1e-3)
    # The target path gives gradient to base weights and never to adapters.
    model.zero_grad()
    weighted_loss(model.encode_targets(target), torch.zeros(1)).backward()
    assert all(p.grad is not None for p in model.qformer_parameters())
    assert all(p.grad is None for p in model.adapter_parameters())
    assert all(p.requires_grad for p in model.parameters())  # the toggle restored requires_grad


def test_frozen_history_has_no_graph_and_full_history_trains_the_base():
    target, hist, mask = batch()
    frozen = encoder("frozen")
    _, h = frozen(target, hist, mask)
    assert not h.requires_grad and frozen.adapter_parameters() == []
    assert frozen.sequence_parameters() == []
    full = encoder("full")
    _, h = full(target, hist, mask)
    weighted_loss(torch.zeros(1), h).backward()
    assert all(p.grad is not None for p in full.qformer_parameters())
    assert len(full.sequence_parameters()) == len(full.qformer_parameters())


CASES = [(mode, variant) for mode in ("frozen", "lora", "full") for variant in ("self", "cross")]


@pytest.mark.parametrize(("mode", "variant"), CASES)
def test_dedup_equals_naive_outputs_and_gradients(mode, variant):
    dedup = encoder(mode, variant, dtype=torch.float64, dedup=True)
    naive = copy.deepcopy(dedup)
    naive.dedup = False
    with torch.no_grad():  # non-zero adapters so the LoRA path is really exercised
        for p in dedup.adapter_parameters() + naive.adapter_parameters():
            p.copy_(torch.linspace(-0.2, 0.2, p.numel(), dtype=p.dtype).view_as(p))
    target, hist, mask = batch()
    with count_item_passes(dedup) as passes_d, count_item_passes(naive) as passes_n:
        out_d, out_n = dedup(target, hist, mask), naive(target, hist, mask)
    for a, b in zip(out_d, out_n, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    weighted_loss(*out_d).backward()
    weighted_loss(*out_n).backward()
    gd, gn = grads(dedup), grads(naive)
    for name in gd:
        assert (gd[name] is None) == (gn[name] is None), name
        if gd[name] is not None:
            torch.testing.assert_close(gd[name], gn[name], rtol=1e-10, atol=1e-12)
    passes_naive = B + int(mask.sum())
    assert passes_n.rows == passes_naive
    expected = (len(torch.unique(torch.cat([target, hist[mask]]))) if mode == "full"
                else len(torch.unique(target)) + len(torch.unique(hist[mask])))
    assert passes_d.rows == expected < passes_naive


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_checkpointed_history_matches_plain_history(mode):
    plain = encoder(mode, dtype=torch.float64, checkpoint_history=False)
    ckpt = copy.deepcopy(plain)
    ckpt.checkpoint_history, ckpt.history_chunk = True, 2  # several chunks
    with torch.no_grad():
        for p in plain.adapter_parameters() + ckpt.adapter_parameters():
            p.fill_(0.05)
    target, hist, mask = batch()
    outs = []
    for m in (plain, ckpt):
        out = m(target, hist, mask)
        weighted_loss(*out).backward()
        outs.append(out)
    torch.testing.assert_close(outs[0][1], outs[1][1], rtol=1e-12, atol=1e-12)
    for (n, a), (_, b) in zip(plain.named_parameters(), ckpt.named_parameters(), strict=True):
        assert (a.grad is None) == (b.grad is None), n
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12)


def test_lora_trainable_state_is_small_and_groups_partition_parameters():
    cfg = QFormerConfig(vision_dim=6, text_dim=7, hidden=128, layers=2, heads=4, num_queries=8)
    model = ItemContentEncoder(tokens(), cfg, seq_mode="lora", lora=LoraSettings(r=4))
    adapters = sum(p.numel() for p in model.adapter_parameters())
    base = sum(p.numel() for p in model.qformer_parameters())
    assert adapters == 2 * 2 * 4 * (128 + 128)  # 2 layers x (query, value) x r x (in + out)
    assert adapters / base < 0.05
    assert adapters + base == model.trainable_parameter_count()


def test_bad_arguments_are_refused():
    cfg = QFormerConfig(vision_dim=6, text_dim=7, hidden=16, heads=2)
    with pytest.raises(ValueError, match="seq_mode"):
        ItemContentEncoder(tokens(), cfg, seq_mode="sometimes")
    with pytest.raises(ValueError, match="token widths"):
        ItemContentEncoder(tokens(), QFormerConfig(vision_dim=5, text_dim=7, hidden=16, heads=2))
    with pytest.raises(ValueError, match="match no linear"):
        ItemContentEncoder(tokens(), cfg, lora=LoraSettings(targets=("qkv",)))
