"""The ranking model's dense tower in bf16 on CPU (``RankingConfig.cpu_precision``): the config,
the bucketed attention positions it needs, and scores and learning against float32."""

from __future__ import annotations

import pytest
import torch
from sklearn.metrics import roc_auc_score

from ranking.archs import DINAttention, bucket_positions
from ranking.config import RankingConfig, native_cpu_bf16
from ranking.model import RankingModel
from ranking.testing.tower import float32_dense_tower
from ranking.testing.train import predict, train_step
from tests.ranking.fixtures import toy_world
from tests.ranking.test_model import DC, L


def test_cpu_precision_is_checked_and_auto_follows_the_cpu():
    with pytest.raises(ValueError, match="cpu_precision: must be one of"):
        RankingConfig(cpu_precision="fp16")
    assert RankingConfig(cpu_precision="auto").cpu_bf16 == native_cpu_bf16()
    assert not RankingConfig(cpu_precision="auto", content_dim=4).cpu_bf16  # content: fp32
    assert RankingConfig(cpu_precision="bf16", content_dim=4).cpu_bf16
    assert RankingConfig(cpu_precision="bf16").cpu_bf16
    assert not RankingConfig(cpu_precision="fp32").cpu_bf16


def test_bucketed_positions_pad_to_the_multiple_and_score_like_the_plain_ones():
    torch.manual_seed(0)
    mask = torch.rand(6, 5) < 0.6
    mask[0] = True  # row 0 (where padding gathers its key) full: padding must not touch it
    row, col = mask.nonzero(as_tuple=True)
    padded = bucket_positions((row, col), length=5, multiple=8)
    assert len(padded[0]) % 8 == 0 and len(padded[0]) - len(row) < 8
    assert torch.equal(padded[0][:len(row)], row) and torch.equal(padded[1][:len(row)], col)
    assert (padded[1][len(row):] == 5).all() and (padded[0][len(row):] == 0).all()
    exact = bucket_positions((row[:8], col[:8]), length=5, multiple=8)  # nothing to pad
    assert torch.equal(exact[0], row[:8]) and torch.equal(exact[1], col[:8])

    plain = DINAttention(dim=4, hidden=(8, 4), softmax=False, dropout=0.0,
                         device=torch.device("cpu"))
    bucketed = DINAttention(dim=4, hidden=(8, 4), softmax=False, dropout=0.0,
                            device=torch.device("cpu"), padded_positions=True)
    bucketed.load_state_dict(plain.state_dict())
    query, keys = torch.randn(6, 4), torch.randn(6, 5, 4)
    want = plain(query, keys, mask, (row, col))
    got = bucketed(query, keys, mask, padded)
    torch.testing.assert_close(got, want)
    want.sum().backward()
    got.sum().backward()
    for (name, a), b in zip(plain.named_parameters(), bucketed.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, msg=name)


def test_bf16_dense_tower_scores_like_fp32_with_float32_heads():
    world = toy_world()
    batch = world.batches(64, 64, seed=5)[0]
    content = {"target_content": torch.randn(64, DC), "hist_content": torch.randn(64, L, DC)}
    models = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)  # same initial weights for both
        models[precision] = RankingModel(world.layout, RankingConfig(
            embedding_dim=8, content_dim=DC, over_arch=(16,), retention_own_tower=True,
            cpu_precision=precision))
    logits = {p: m(batch, **content).logits for p, m in models.items()}
    for name, want in logits["fp32"].items():
        got = logits["bf16"][name]
        # The heads ran in float32: no bf16 logits, and no ties from 8-bit mantissas.
        assert got.dtype == torch.float32
        assert got.unique().numel() == want.unique().numel()
        # bf16 really ran (the scores moved), and only by rounding.
        assert not torch.equal(got, want)
        torch.testing.assert_close(got, want, rtol=0.05, atol=0.02)
    # float32_dense_tower: the bf16 model scores as float32 inside the block, bf16 after it.
    bf16 = models["bf16"]
    with float32_dense_tower(bf16):
        inside = bf16(batch, **content).logits
    after = bf16(batch, **content).logits
    for name, want in logits["fp32"].items():
        torch.testing.assert_close(inside[name], want)
        torch.testing.assert_close(after[name], logits["bf16"][name])


def test_bf16_dense_tower_learns_the_planted_signal_like_fp32():
    world = toy_world()
    train, test = world.batches(12_000, 256, seed=1), world.batches(3000, 1000, seed=2)
    labels = torch.cat([b.labels["click"] for b in test]).numpy()
    auc = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = RankingModel(world.layout, RankingConfig(embedding_dim=8, over_arch=(32,),
                                                         cpu_precision=precision))
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        for batch in train:
            train_step(model, optimizer, batch)
        auc[precision] = roc_auc_score(labels, predict(model, test)["click"].numpy())
    assert auc["bf16"] > 0.6
    assert abs(auc["bf16"] - auc["fp32"]) < 0.02, auc
