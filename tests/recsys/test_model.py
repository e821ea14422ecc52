"""The EM3 composition (recsys/model/em3.py) on the tiny world: the CIC and interest losses reach
the content model, the interest scale, the unknown-item vector of each preset."""

from __future__ import annotations

import pytest
import torch

from data.loader import BatchLoader
from recsys.config import load_train_config
from recsys.model.em3 import EM3Model
from tests.recsys.train_fixtures import TINY, content_model


def test_cic_gives_the_qformer_gradients_and_falls(world):
    torch.manual_seed(0)
    model, prepared = content_model(world, "cic.weight=1.0")
    batches = list(BatchLoader(prepared, "train", 256, shuffle=True, seed=0))
    out = model(batches[0])
    cic = model.cic(out.target_content, out.target_item_emb, batches[0].target_item_rows)
    cic.backward()
    grads = [p.grad for p in model.content.qformer_parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0

    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    fixed = batches[0]
    losses = []
    for _ in range(80):
        out = model(fixed)
        loss = model.cic(out.target_content, out.target_item_emb, fixed.target_item_rows)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0], losses[::10]


def test_interest_loss_trains_the_target_encoder_and_the_history_adapters(world):
    torch.manual_seed(0)
    model, prepared = content_model(world)
    batch = next(iter(BatchLoader(prepared, "train", 256, shuffle=True, seed=0)))
    out = model(batch)
    assert out.hist_content is not None and out.hist_content.shape[:2] == batch.hist_mask.shape
    loss, parts = model.loss(out, batch)
    assert parts["interest"] > 0
    model.interest(out.target_content, out.hist_content, batch.hist_mask,
                   batch.labels["click"] > 0.5, batch.user_key).backward()
    groups = model.content_param_groups()
    for name in ("qformer", "adapters"):  # target side: base weights; history side: LoRA
        assert sum(float(p.grad.abs().sum()) for p in groups[name] if p.grad is not None) > 0, name


def test_interest_scale_multiplies_only_the_interest_term(world):
    torch.manual_seed(0)
    model, prepared = content_model(world)
    batch = next(iter(BatchLoader(prepared, "train", 256, shuffle=True, seed=0)))
    out = model(batch)
    full, parts = model.loss(out, batch)
    off, parts_off = model.loss(out, batch, interest_scale=0.0)
    half, _ = model.loss(out, batch, interest_scale=0.5)
    assert parts_off["interest"] == pytest.approx(parts["interest"])  # reported unscaled
    weight = model.cfg.interest.weight
    assert float(full - off) == pytest.approx(weight * parts["interest"], rel=1e-5)
    assert float(half - off) == pytest.approx(0.5 * weight * parts["interest"], rel=1e-5)


def test_id_only_trains_the_unknown_item_vector_and_em3_leaves_it_at_zero(world):
    """The presets' cold-item policy: ``id_only`` hides 10% of the target item IDs behind the
    unknown-item vector (so a training step reaches it), ``em3`` scores cold items from content."""
    em3, prepared = content_model(world)
    cfg = load_train_config("id_only", [*TINY, f'data.dir="{world}"'])
    id_only = EM3Model(prepared.layout, cfg)
    batch = next(iter(BatchLoader(prepared, "train", 256, shuffle=True, seed=0)))
    grads = {}
    for name, model in (("id_only", id_only), ("em3", em3)):
        torch.manual_seed(0)
        model.train()
        loss, _ = model.loss(model(batch), batch)
        loss.backward()
        unknown = model.ranking.sparse_arch.unknown_item.weight
        assert float(unknown.abs().sum()) == 0.0  # zero-initialised in both
        grads[name] = float(unknown.grad.abs().sum())
    assert grads["id_only"] > 0
    assert grads["em3"] == 0.0
