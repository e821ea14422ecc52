"""The Content-ID contrastive loss: values, masking of duplicate items, gradients."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from recsys.model.cic import ContentIdContrastive


def _identity_cic(dim: int, temperature: float = 0.1) -> ContentIdContrastive:
    cic = ContentIdContrastive(dim, dim, proj_dim=dim, temperature=temperature)
    with torch.no_grad():
        for proj in (cic.content_proj, cic.id_proj):
            proj.weight.copy_(torch.eye(dim))
            proj.bias.zero_()
    return cic


def test_aligned_pairs_give_low_loss_and_random_pairs_high():
    torch.manual_seed(0)
    cic = _identity_cic(16)
    x = torch.randn(32, 16)
    keys = torch.arange(32)
    aligned = cic(x, x, keys).item()
    shuffled = cic(x, x[torch.randperm(32)], keys).item()
    assert aligned < 0.5
    assert shuffled > math.log(32) - 1.5


def test_matches_reference_symmetric_infonce_without_duplicates():
    torch.manual_seed(1)
    cic = _identity_cic(8, temperature=0.5)
    c, i = torch.randn(10, 8), torch.randn(10, 8)
    logits = F.normalize(c, dim=-1) @ F.normalize(i, dim=-1).T / 0.5
    t = torch.arange(10)
    ref = 0.5 * (F.cross_entropy(logits, t) + F.cross_entropy(logits.T, t))
    assert torch.allclose(cic(c, i, t), ref, atol=1e-6)


def test_duplicate_items_are_not_negatives():
    torch.manual_seed(2)
    cic = _identity_cic(8)
    c = torch.randn(4, 8)
    # Rows 0 and 1 are the same item with identical embeddings: unmasked, each would count the
    # other as a perfect-scoring negative and the loss would sit near log(2).
    c[1] = c[0]
    keys = torch.tensor([7, 7, 3, 5])
    masked = cic(c, c, keys).item()
    unmasked = cic(c, c, torch.arange(4)).item()
    assert masked < 0.05
    assert unmasked > 0.3


def test_gradients_reach_both_inputs_and_projections():
    torch.manual_seed(3)
    cic = ContentIdContrastive(6, 4, proj_dim=5)
    content = torch.randn(8, 6, requires_grad=True)
    ids = torch.randn(8, 4, requires_grad=True)
    cic(content, ids, torch.arange(8)).backward()
    assert content.grad.abs().sum() > 0 and ids.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in cic.parameters())
