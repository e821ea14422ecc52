"""Fusion-Q-Former: shapes, mask invariance and missing-modality behaviour for both variants."""

from __future__ import annotations

import pytest
import torch

from multimodal.qformer import FusionQFormer, QFormerConfig

B, TV, TT, DV, DT = 3, 5, 6, 12, 10
VARIANTS = ["self", "cross"]


def make(variant: str, **kw) -> FusionQFormer:
    torch.manual_seed(0)
    cfg = QFormerConfig(vision_dim=DV, text_dim=DT, variant=variant, hidden=16, layers=2, heads=2,
                        num_queries=4, dropout=0.0, **kw)
    return FusionQFormer(cfg).eval()


def inputs(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    vision = torch.randn(B, TV, DV, generator=g).half()
    text = torch.randn(B, TT, DT, generator=g).half()
    vmask = torch.ones(B, TV, dtype=torch.bool)
    tmask = torch.ones(B, TT, dtype=torch.bool)
    tmask[0, 4:] = False   # item 0: two padded text tokens
    vmask[1] = False       # item 1: no image
    return vision, vmask, text, tmask


@pytest.mark.parametrize("variant", VARIANTS)
def test_output_shapes_and_pooled_is_mean_of_queries(variant):
    q, pooled = make(variant)(*inputs())
    assert q.shape == (B, 4, 16) and pooled.shape == (B, 16)
    assert q.dtype == torch.float32  # fp16 cache inputs are cast to the module's dtype
    torch.testing.assert_close(pooled, q.mean(dim=1))


@pytest.mark.parametrize("variant", VARIANTS)
def test_padded_tokens_do_not_change_the_output(variant):
    model = make(variant)
    vision, vmask, text, tmask = inputs()
    before = model(vision, vmask, text, tmask)
    garbage = text.clone()
    garbage[0, 4:] = torch.tensor(float("nan"))  # even NaN in a padded slot must not leak
    model.train()  # dropout is 0: train mode only so that backward runs
    after = model(vision, vmask, garbage, tmask)
    for a, b in zip(before, after, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    after[1].pow(2).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    # Same as if the padded tokens were not there at all (shorter sequence).
    short = model(vision[:1], vmask[:1], text[:1, :4], tmask[:1, :4])
    torch.testing.assert_close(short[1], before[1][:1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_masked_out_modality_does_not_change_the_output(variant):
    model = make(variant)
    vision, vmask, text, tmask = inputs()
    before = model(vision, vmask, text, tmask)
    other = vision.clone()
    other[1] = torch.randn(TV, DV).half() * 100  # item 1's image is masked out entirely
    after = model(other, vmask, text, tmask)
    torch.testing.assert_close(after[1][1], before[1][1], rtol=0, atol=1e-6)
    # ... and equals encoding the item with no visual tokens at all.
    text_only = model(vision[1:2, :0], vmask[1:2, :0], text[1:2], tmask[1:2])
    torch.testing.assert_close(text_only[1], before[1][1:2], rtol=1e-5, atol=1e-5)
    # The unmasked items did see their images: changing item 2's image changes item 2 only.
    other[2] = other[2] + 1
    changed = model(other, vmask, text, tmask)[1]
    assert not torch.allclose(changed[2], before[1][2], atol=1e-4)


@pytest.mark.parametrize("variant", VARIANTS)
def test_items_without_image_or_without_anything_get_finite_embeddings(variant):
    model = make(variant)
    vision, vmask, text, tmask = inputs()
    tmask[2] = False
    vmask[2] = False  # item 2: no content at all
    q, pooled = model(vision, vmask, text, tmask)
    assert torch.isfinite(q).all() and torch.isfinite(pooled).all()
    # The image-less item 1 still depends on its text.
    text2 = text.clone()
    text2[1] += 1
    assert not torch.allclose(model(vision, vmask, text2, tmask)[1][1], pooled[1], atol=1e-4)
    # Gradients stay finite too (the masked softmax rows must not produce NaN in backward).
    model.train()
    model(vision, vmask, text, tmask)[1].pow(2).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_parameter_learns(variant):
    model = make(variant).train()
    _, pooled = model(*inputs())
    (pooled * torch.randn_like(pooled)).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_variants_differ_in_structure_and_names_are_peft_targetable():
    names_self = {n.rsplit(".", 1)[-1] for n, m in make("self").named_modules()
                  if isinstance(m, torch.nn.Linear)}
    assert names_self == {"query", "key", "value", "out", "fc1", "fc2", "vision_proj", "text_proj"}
    cross = make("cross")
    assert hasattr(cross.blocks[0], "cross_attn") and not hasattr(make("self").blocks[0], "cross_attn")


@pytest.mark.parametrize("bad", [dict(hidden=10, heads=3), dict(variant="both"), dict(dropout=1.0),
                                 dict(num_queries=0)])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        QFormerConfig(vision_dim=4, text_dim=4, **bad)
