"""Frozen pooled content: fixed per-item vectors, one trained projection, no content model."""

from __future__ import annotations

import pytest
import torch

from multimodal.pooled_content import PooledItemContent, pooled_item_vectors
from multimodal.tokens import TokenTensors
from recsys.config import load_train_config
from recsys.errors import UsageError


def _tokens() -> TokenTensors:
    g = torch.Generator().manual_seed(0)
    vision = torch.randn(5, 3, 6, generator=g).half()
    text = torch.randn(5, 4, 2, generator=g).half()
    vision_mask = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    text_mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 0]],
                             dtype=torch.bool)
    return TokenTensors(vision * vision_mask[..., None], vision_mask, text * text_mask[..., None], text_mask)


def test_each_modality_is_a_normalised_masked_mean_with_a_presence_flag():
    tokens = _tokens()
    vectors = pooled_item_vectors(tokens, chunk=2)  # chunks must not change anything
    assert vectors.shape == (5, 6 + 2 + 2) and vectors.dtype == torch.float32
    for row in range(5):
        for start, width, x, mask in ((0, 6, tokens.vision, tokens.vision_mask),
                                      (6, 2, tokens.text, tokens.text_mask)):
            got = vectors[row, start:start + width]
            if not mask[row].any():
                assert torch.equal(got, torch.zeros(width))
                continue
            mean = x[row][mask[row]].float().mean(0)
            torch.testing.assert_close(got, mean / mean.norm())
    assert vectors[:, 8].tolist() == [1, 1, 0, 1, 1] and vectors[:, 9].tolist() == [1, 1, 1, 0, 1]


def test_target_and_history_read_the_fixed_vectors_through_one_trained_projection():
    content = PooledItemContent(_tokens(), hidden=4)
    rows = torch.tensor([2, 0])
    hist = torch.tensor([[1, 4, 0], [3, 0, 0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    target, history = content(rows, hist, mask)
    assert target.shape == (2, 4) and history.shape == (2, 3, 4)
    torch.testing.assert_close(target, content.proj(content.vectors[rows]))
    torch.testing.assert_close(history[0, 1], content.proj(content.vectors[4]))
    assert torch.equal(history[~mask], torch.zeros(3, 4))
    (target.sum() + history.sum()).backward()
    assert content.proj.weight.grad is not None
    # The vectors are a buffer (never trained, never saved): the content model has no weights.
    assert [name for name, _ in content.named_parameters()] == ["proj.weight", "proj.bias"]
    assert "vectors" not in content.state_dict()
    assert content.qformer_parameters() == [] and content.adapter_parameters() == []


def test_the_preset_and_its_refusals():
    cfg = load_train_config("frozen_content")
    assert (cfg.content.fusion, cfg.content.seq_mode, cfg.uses_cic, cfg.uses_interest) == (
        "pooled", "frozen", False, False)
    with pytest.raises(UsageError, match='seq_mode must be "none" or "frozen"'):
        load_train_config("frozen_content", ['content.seq_mode="lora"'])
