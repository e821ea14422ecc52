"""The interest contrastive loss: which rows count, history pooling, user masking, gradients."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from recsys.model.interest import InterestContrastive


def _identity(dim: int, temperature: float = 0.1) -> InterestContrastive:
    loss = InterestContrastive(dim, proj_dim=dim, temperature=temperature)
    with torch.no_grad():
        loss.proj.weight.copy_(torch.eye(dim))
        loss.proj.bias.zero_()
    return loss


def test_matches_reference_infonce_over_positive_rows_with_masked_history_means():
    torch.manual_seed(0)
    loss = _identity(8, temperature=0.5)
    b, length = 6, 4
    target, hist = torch.randn(b, 8), torch.randn(b, length, 8)
    mask = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0],
                         [1, 1, 1, 0], [1, 0, 0, 0]], dtype=torch.bool)
    positive = torch.tensor([1, 1, 1, 1, 0, 1], dtype=torch.bool)
    users = torch.arange(b)
    rows = [0, 1, 2, 5]  # positive and with a history (row 3 has none, row 4 is negative)
    means = torch.stack([hist[r][mask[r]].mean(0) for r in rows])
    logits = F.normalize(target[rows], dim=-1) @ F.normalize(means, dim=-1).T / 0.5
    t = torch.arange(len(rows))
    want = 0.5 * (F.cross_entropy(logits, t) + F.cross_entropy(logits.T, t))
    noisy = hist.clone()
    noisy[~mask] = 50.0  # padding must not enter the history mean
    torch.testing.assert_close(loss(target, noisy, mask, positive, users), want)


def test_rows_of_the_same_user_are_not_negatives():
    torch.manual_seed(1)
    loss = _identity(8)
    target = torch.randn(4, 8)
    hist = target.unsqueeze(1).repeat(1, 2, 1)  # each history mean equals its target
    hist[1] = hist[0]
    target[1] = target[0]  # rows 0 and 1: the same user, the same interest
    mask = torch.ones(4, 2, dtype=torch.bool)
    positive = torch.ones(4, dtype=torch.bool)
    masked = loss(target, hist, mask, positive, torch.tensor([9, 9, 2, 3])).item()
    unmasked = loss(target, hist, mask, positive, torch.arange(4)).item()
    assert masked < 0.05
    assert unmasked > 0.3


def test_fewer_than_two_rows_give_zero_with_a_graph_and_gradients_reach_inputs():
    torch.manual_seed(0)
    loss = InterestContrastive(6, proj_dim=5)
    target = torch.randn(5, 6, requires_grad=True)
    hist = torch.randn(5, 3, 6, requires_grad=True)
    mask = torch.ones(5, 3, dtype=torch.bool)
    one = torch.tensor([1, 0, 0, 0, 0], dtype=torch.bool)
    zero = loss(target, hist, mask, one, torch.arange(5))
    assert zero.item() == 0.0 and zero.requires_grad
    zero.backward()
    assert loss.proj.weight.grad is not None  # DDP's static graph needs the same params every step
    loss.zero_grad()
    loss(target, hist, mask, torch.ones(5, dtype=torch.bool), torch.arange(5)).backward()
    assert target.grad.abs().sum() > 0 and hist.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in loss.parameters())
