"""The ranking model's Arch modules and their composition, as plain (unsharded) modules."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from sklearn.metrics import roc_auc_score

from data.batch import HISTORY_FEATURE, ITEM_FEATURE, USER_FEATURE, FeatureLayout
from ranking.archs import DCNInteraction, DINAttention, DLRMInteraction
from ranking.config import RankingConfig
from ranking.loss import multitask_bce
from ranking.model import RankingModel
from ranking.testing.toy_data import ToyWorld, make_batch, random_batch
from ranking.testing.train import predict, train_step
from tests.ranking.fixtures import toy_world

L, DC = 10, 6

CASES = [  # interaction, content_dim, use_history_content, softmax, low_rank
    ("dcn", 0, True, False, 0),
    ("dcn", DC, True, True, 4),
    ("dcn", DC, False, False, 0),
    ("dlrm", 0, True, True, 0),
    ("dlrm", DC, True, False, 0),
]


def content_for(config: RankingConfig, batch_size: int, seed: int = 0):
    if config.content_dim == 0:
        return {}
    g = torch.Generator().manual_seed(seed)
    out = {"target_content": torch.randn(batch_size, config.content_dim, generator=g)}
    if config.use_history_content:
        out["hist_content"] = torch.randn(batch_size, L, config.content_dim, generator=g)
    return out


@pytest.mark.parametrize("interaction,content_dim,use_hist,softmax,low_rank", CASES)
def test_forward_shapes_target_embedding_and_gradients(interaction, content_dim, use_hist,
                                                       softmax, low_rank):
    world = toy_world()
    config = RankingConfig(embedding_dim=8, interaction=interaction, content_dim=content_dim,
                           use_history_content=use_hist, attention_softmax=softmax,
                           dcn_low_rank=low_rank, over_arch=(16,))
    model = RankingModel(world.layout, config)
    batch = world.batches(48, 48, seed=1)[0]
    out = model(batch, **content_for(config, 48))
    assert model.head_names == ("click", "return_7d")
    shapes = {k: tuple(v.shape) for k, v in out.logits.items()}
    assert shapes == {"click": (48,), "return_7d": (48,)}
    table = model.sparse_arch.ec.embeddings["table_item"].weight
    torch.testing.assert_close(out.target_item_emb, table[batch.target_item_rows])
    sum(v.sum() for v in out.logits.values()).backward()
    # Every parameter gets a gradient: DDP's static graph assumes no unused parameters.
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []


def test_sparse_arch_pads_history_left_aligned_with_its_mask():
    world = toy_world()
    model = RankingModel(world.layout, RankingConfig(embedding_dim=4))
    batch = world.batches(32, 32, seed=2)[0]
    _, _, history, mask = model.sparse_arch(batch.pooled, batch.sequence)
    assert torch.equal(mask, batch.hist_mask)
    table = model.sparse_arch.ec.embeddings["table_item"].weight
    torch.testing.assert_close(history[mask], table[batch.hist_item_rows[mask]])
    assert history[~mask].abs().sum() == 0


def test_din_attention_ignores_padding_and_zeroes_empty_history():
    torch.manual_seed(0)
    attention = DINAttention(dim=4, hidden=(8,), softmax=True, dropout=0.0,
                             device=torch.device("cpu"))
    query, keys = torch.randn(3, 4), torch.randn(3, 5, 4)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=torch.bool)
    out = attention(query, keys, mask)
    noisy = keys.clone()
    noisy[~mask] = 100.0  # whatever sits in padding must not leak in
    torch.testing.assert_close(attention(query, noisy, mask), out)
    assert out[2].abs().sum() == 0
    # With softmax and identical keys the weights sum to one: the output is that key.
    same = keys[:, :1].expand(3, 5, 4)
    torch.testing.assert_close(attention(query, same, mask)[:2], keys[:2, 0])


def test_batch_without_any_history_is_scored_from_the_other_features():
    world = toy_world()
    batch = world.batches(8, 8, seed=0)[0]
    pooled = {name: jt.values() for name, jt in batch.pooled.to_dict().items()}
    empty = make_batch(world.layout, pooled, batch.target_item_rows,
                       torch.zeros(8, L, dtype=torch.long), torch.zeros(8, dtype=torch.long),
                       batch.labels)
    model = RankingModel(world.layout, RankingConfig(embedding_dim=4))
    _, _, history, mask = model.sparse_arch(empty.pooled, empty.sequence)
    assert history.shape == (8, L, 4) and not mask.any() and history.abs().sum() == 0
    assert torch.isfinite(model(empty).logits["click"]).all()


def test_din_attention_without_softmax_is_a_score_weighted_sum():
    torch.manual_seed(0)
    attention = DINAttention(4, (8,), softmax=False, dropout=0.0, device=torch.device("cpu"))
    query, keys = torch.randn(2, 4), torch.randn(2, 3, 4)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    q = query.unsqueeze(1).expand_as(keys)
    scores = attention.score(attention.unit(torch.cat([q, keys, q - keys, q * keys], -1)))
    want = (scores.squeeze(-1) * mask).unsqueeze(-1).mul(keys).sum(1)
    torch.testing.assert_close(attention(query, keys, mask), want)


def test_dcn_cross_layers_follow_the_dcnv2_formula():
    torch.manual_seed(0)
    full = DCNInteraction(num_features=3, dim=2, layers=2, low_rank=0, device=torch.device("cpu"))
    x = torch.randn(4, 3, 2)
    x0 = x.flatten(1)
    x1 = x0 * full.crosses[0](x0) + x0
    x2 = x0 * full.crosses[1](x1) + x1
    torch.testing.assert_close(full(x), x2)
    low = DCNInteraction(3, 2, layers=1, low_rank=2, device=torch.device("cpu"))
    u, v = low.crosses[0][1], low.crosses[0][0]
    want = x0 * (x0 @ v.weight.T @ u.weight.T + u.bias) + x0
    torch.testing.assert_close(low(x), want)
    assert v.weight.shape == (2, 6)  # rank-2 factor of a 6 x 6 matrix


def test_dlrm_interaction_appends_every_pairwise_dot_product():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 3)
    out = DLRMInteraction(num_features=4, dim=3)(x)
    assert out.shape == (2, 4 * 3 + 6)
    torch.testing.assert_close(out[:, :12], x.flatten(1))
    pairs = [(i, j) for i in range(4) for j in range(i + 1, 4)]
    want = torch.stack([(x[:, i] * x[:, j]).sum(-1) for i, j in pairs], dim=1)
    torch.testing.assert_close(out[:, 12:], want)


def test_content_arguments_are_checked():
    torch.manual_seed(0)
    world = toy_world()
    batch = world.batches(8, 8, seed=0)[0]
    id_only = RankingModel(world.layout, RankingConfig(embedding_dim=4))
    with pytest.raises(ValueError, match="ID-only"):
        id_only(batch, target_content=torch.randn(8, 4))
    model = RankingModel(world.layout, RankingConfig(embedding_dim=4, content_dim=DC))
    with pytest.raises(ValueError, match="target_content"):
        model(batch)
    with pytest.raises(ValueError, match="hist_content"):
        model(batch, target_content=torch.randn(8, DC), hist_content=torch.randn(8, L - 1, DC))
    no_hist = RankingModel(world.layout, RankingConfig(embedding_dim=4, content_dim=DC,
                                                       use_history_content=False))
    with pytest.raises(ValueError, match="use_history_content"):
        no_hist(batch, target_content=torch.randn(8, DC), hist_content=torch.randn(8, L, DC))


def test_dense_features_enter_as_one_more_feature_and_are_checked():
    world = toy_world()
    layout = dataclasses.replace(world.layout, dense=("prior_logit",))
    batch = world.batches(16, 16, seed=0)[0]
    # Without the offset (next test): here the feature reaches the logit through dense_proj only.
    config = RankingConfig(embedding_dim=4, over_arch=(8,), prior_offset=False)
    torch.manual_seed(0)
    plain = RankingModel(world.layout, config)
    torch.manual_seed(0)
    model = RankingModel(layout, config)
    # One D-wide feature more in the interaction: F' = F + 2 (target, attended) + 1 (dense).
    assert model.interaction.output_dim == plain.interaction.output_dim + 4
    with pytest.raises(ValueError, match="B x 1"):
        model(batch)
    with pytest.raises(ValueError, match="has none"):
        plain(dataclasses.replace(batch, dense=torch.zeros(16, 1)))
    low = model(dataclasses.replace(batch, dense=torch.full((16, 1), -4.0))).logits["click"]
    high = model(dataclasses.replace(batch, dense=torch.full((16, 1), 4.0))).logits["click"]
    assert not torch.allclose(low, high)
    # The dense value reaches the logit through dense_proj only, and trains it.
    same = model(dataclasses.replace(batch, dense=torch.full((16, 1), 4.0))).logits["click"]
    torch.testing.assert_close(high, same)
    high.sum().backward()
    assert model.dense_proj.weight.grad is not None and model.dense_proj.weight.grad.abs().sum() > 0


def test_prior_offset_adds_the_scaled_prior_logit_to_the_primary_head_only():
    world = toy_world()
    layout = dataclasses.replace(world.layout, dense=("prior_logit",))
    batch = world.batches(16, 16, seed=0)[0]
    torch.manual_seed(0)
    plain = RankingModel(layout, RankingConfig(embedding_dim=4, over_arch=(8,), prior_offset=False))
    assert plain.prior_offset is None
    torch.manual_seed(0)
    model = RankingModel(layout, RankingConfig(embedding_dim=4, over_arch=(8,)))  # the default
    model.load_state_dict({**plain.state_dict(), "prior_offset.scale": torch.tensor([1.0])})
    prior = torch.linspace(-4, 4, 16).unsqueeze(1)
    with_prior = dataclasses.replace(batch, dense=prior)
    base, out = plain(with_prior).logits, model(with_prior).logits
    # Starts at scale 1: the primary logit is the tower's plus the prior logit itself.
    primary, *others = layout.labels + layout.retention_labels
    torch.testing.assert_close(out[primary], base[primary] + prior.squeeze(1))
    for head in others:
        torch.testing.assert_close(out[head], base[head])
    # The scale trains, with the gradient of the primary logit times the feature.
    out[primary].sum().backward()
    torch.testing.assert_close(model.prior_offset.scale.grad, prior.sum().reshape(1))
    # A layout without the feature gets no offset; the meta build materialises it at 1.
    assert RankingModel(world.layout, RankingConfig(embedding_dim=4, prior_offset=True)).prior_offset is None
    meta = RankingModel(layout, RankingConfig(embedding_dim=4, prior_offset=True), device="meta")
    meta.prior_offset.to_empty(device="cpu").reset_parameters()
    assert meta.prior_offset.scale.item() == 1.0


def test_history_content_changes_scores_only_through_valid_positions():
    world = toy_world()
    config = RankingConfig(embedding_dim=4, content_dim=DC, attention_softmax=True)
    model = RankingModel(world.layout, config).eval()
    batch = world.batches(16, 16, seed=3)[0]
    content = content_for(config, 16)
    base = model(batch, **content).logits["click"]
    padded = content["hist_content"].clone()
    padded[~batch.hist_mask] = 50.0
    target = content["target_content"]
    torch.testing.assert_close(model(batch, target, padded).logits["click"], base)
    moved = content["hist_content"].clone()
    moved[batch.hist_mask] += 1.0
    assert (model(batch, target, moved).logits["click"] - base).abs().max() > 1e-4


@pytest.mark.parametrize("detach", [True, False])
def test_detached_history_ids_leave_the_item_table_to_the_targets(detach):
    world = toy_world()
    model = RankingModel(world.layout, RankingConfig(embedding_dim=4, detach_history_ids=detach))
    batch = world.batches(32, 32, seed=3)[0]
    model(batch).logits["click"].sum().backward()
    table = model.sparse_arch.ec.embeddings["table_item"].weight
    ids = batch.sequence.to_dict()
    targets = set(ids["item"].values().tolist())
    history_only = sorted(set(ids["hist_item"].values().tolist()) - targets)
    assert history_only, "the batch needs items that occur in histories only"
    rows_with_grad = set(table.grad.abs().sum(1).nonzero().flatten().tolist())
    assert rows_with_grad.isdisjoint(history_only) == detach
    assert rows_with_grad & targets
    # The attention unit trains either way.
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.attention.parameters())


def test_names_that_clash_with_module_attributes_work():
    layout = FeatureLayout(pooled={"user": 5, "items": 4, "keys": 3, "values": 3},
                           item_vocab_size=7, max_history=3, labels=("items",),
                           retention_labels=("keys",), num_items=7)
    model = RankingModel(layout, RankingConfig(embedding_dim=4))
    out = model(random_batch(layout, 6, torch.Generator().manual_seed(0)))
    assert set(out.logits) == {"items", "keys"}


def test_meta_build_allocates_no_parameter_memory():
    layout = ToyWorld.create(num_items=10_000_000).layout  # 10M x 64 floats would be 2.5 GB
    model = RankingModel(layout, RankingConfig(embedding_dim=64), device="meta")
    assert all(p.device.type == "meta" for p in model.parameters())
    assert model.sparse_arch.ec.embeddings["table_item"].weight.shape == (10_000_001, 64)


def test_toy_batches_follow_the_batch_contract():
    world = toy_world()
    batch = world.batches(40, 40, seed=4)[0]
    assert batch.pooled.keys() == list(world.layout.pooled)
    assert torch.equal(batch.pooled.lengths(), torch.ones(40 * 3, dtype=torch.int64))
    seq = batch.sequence.to_dict()
    assert torch.equal(seq[ITEM_FEATURE].values(), batch.target_item_rows)
    assert torch.equal(seq[HISTORY_FEATURE].lengths(), batch.hist_mask.sum(1))
    assert torch.equal(seq[HISTORY_FEATURE].values(), batch.hist_item_rows[batch.hist_mask])
    assert (batch.hist_item_rows[~batch.hist_mask] == 0).all()
    censored = ~batch.label_masks["return_7d"]
    assert censored.any() and (batch.labels["return_7d"][censored] == 0).all()


def _item_rate_auc(train: list, test: list) -> float:
    """Test AUC of the baseline that knows only each item's click rate on the training rows
    (Laplace-smoothed): what a per-item bias alone scores."""
    items = torch.cat([b.target_item_rows for b in train])
    clicks = torch.cat([b.labels["click"] for b in train])
    n = int(items.max()) + 1
    rate = (torch.zeros(n).index_add_(0, items, clicks) + 1) / (torch.bincount(items, minlength=n) + 2)
    test_items = torch.cat([b.target_item_rows for b in test])
    return roc_auc_score(torch.cat([b.labels["click"] for b in test]).numpy(),
                         rate[test_items].numpy())


def test_plain_baseline_learns_the_planted_signal():
    world = toy_world()
    torch.manual_seed(0)
    # float32 on every CPU: "auto" would pick bf16 where the CPU has it, and the comparison
    # with the item rates below is closer than bf16 and fp32 runs are to each other.
    model = RankingModel(world.layout, RankingConfig(embedding_dim=8, over_arch=(32,),
                                                     cpu_precision="fp32"))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    train = world.batches(12_000, 256, seed=1)
    for batch in train:
        train_step(model, optimizer, batch)
    test = world.batches(3000, 1000, seed=2)
    scores = predict(model, test)["click"]
    labels = torch.cat([b.labels["click"] for b in test])
    auc = roc_auc_score(labels.numpy(), scores.numpy())
    assert auc > 0.6
    # At least what the items' own click rates on the same rows score (the planted item bias;
    # ~0.64 here). On 12k rows the ID-only model learns no more than that: the history signal
    # needs the content test below.
    assert auc >= _item_rate_auc(train, test), auc


def _group_content_batches(world, rows: int, seed: int, history: bool) -> list:
    """``world.batches`` with every user ID replaced by a random one, so that only the history
    tells a user's favourite group; ``history=False`` empties every history."""
    g = torch.Generator().manual_seed(100 + seed)
    layout, out = world.layout, []
    for b in world.batches(rows, 256 if seed == 1 else 1000, seed=seed):
        n = b.size
        pooled = dict(zip(layout.pooled, b.pooled.values().split(n), strict=True))
        pooled[USER_FEATURE] = torch.randint(1, layout.pooled[USER_FEATURE], (n,), generator=g)
        lengths = b.hist_mask.sum(1) if history else torch.zeros(n, dtype=torch.long)
        out.append(make_batch(layout, pooled, b.target_item_rows, b.hist_item_rows, lengths,
                              b.labels, b.label_masks, row_id=b.row_id))
    return out


def test_din_over_history_content_learns_what_no_item_bias_knows():
    """The toy world's click depends on the item bias and on the share of the history in the
    target's group. Each item's content is its group (one-hot through a trained linear tower);
    user IDs are hidden, so only the DIN attention over the history can find the share. With
    the history, the model beats both the items' click rates and itself trained and scored
    without any history."""
    world = toy_world()
    groups = torch.nn.functional.one_hot(world.item_group).float()  # item row -> its group

    def fit_and_score(history: bool) -> tuple[float, list, list]:
        train = _group_content_batches(world, 36_000, seed=1, history=history)
        test = _group_content_batches(world, 3000, seed=2, history=history)
        torch.manual_seed(0)
        tower = torch.nn.Linear(groups.shape[1], 8)
        model = RankingModel(world.layout, RankingConfig(embedding_dim=8, over_arch=(32,),
                                                         content_dim=8, cpu_precision="fp32"))
        optimizer = torch.optim.Adam([*tower.parameters(), *model.parameters()], lr=1e-2)

        def forward(batch):
            return model(batch, tower(groups[batch.target_item_rows]),
                         tower(groups[batch.hist_item_rows]))

        for batch in train:
            loss, _ = multitask_bce(forward(batch).logits, batch.labels, batch.label_masks)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            scores = torch.cat([torch.sigmoid(forward(b).logits["click"]) for b in test])
        labels = torch.cat([b.labels["click"] for b in test])
        return roc_auc_score(labels.numpy(), scores.numpy()), train, test

    with_history, train, test = fit_and_score(history=True)
    without_history, _, _ = fit_and_score(history=False)
    item_rate = _item_rate_auc(train, test)
    # Measured: ~0.705 with history, ~0.673 without, ~0.680 for the item rates (the true
    # p(click) would score ~0.76).
    assert with_history > item_rate + 0.015, (with_history, item_rate)
    assert with_history > without_history + 0.02, (with_history, without_history)


def _grads_of(model: RankingModel, loss: torch.Tensor) -> dict[str, float]:
    """Parameter name → total |gradient| of ``loss`` (0.0 where the gradient is None)."""
    model.zero_grad()
    loss.backward()
    return {n: 0.0 if p.grad is None else float(p.grad.abs().sum())
            for n, p in model.named_parameters()}


def test_retention_heads_on_the_shared_tower_by_default():
    world = toy_world()
    model = RankingModel(world.layout, RankingConfig(embedding_dim=8, over_arch=(16,)))
    assert model.retention is None and model.head_names == ("click", "return_7d")
    grads = _grads_of(model, model(world.batches(48, 48, seed=3)[0]).logits["return_7d"].sum())
    assert grads["over_arch.tower.0.weight"] > 0.0


def test_retention_own_tower_trains_the_user_embedding_and_its_mlp_not_the_click_tower():
    torch.manual_seed(0)
    world = toy_world()
    model = RankingModel(world.layout, RankingConfig(embedding_dim=8, over_arch=(16,),
                                                     retention_own_tower=True))
    batch = world.batches(48, 48, seed=3)[0]
    assert model.head_names == ("click", "return_7d")

    retention = _grads_of(model, model(batch).logits["return_7d"].sum())
    shared = ("over_arch.", "interaction.", "attention.", "attention_proj.", "dense_proj.",
              "heads.", "sparse_arch.ec.", "sparse_arch.unknown_item")
    assert {n: g for n, g in retention.items() if n.startswith(shared) and g != 0.0} == {}
    trained = [n for n, g in retention.items() if g > 0.0]
    assert any(n.startswith("retention.") for n in trained)
    user_table = model.sparse_arch.ebc.embedding_bags["table_user"].weight
    assert user_table.grad.abs().sum(dim=1).nonzero().numel() > 0  # the batch's user rows
    other_tables = [n for n in trained if n.startswith("sparse_arch.ebc.")
                    and "table_user" not in n]
    assert other_tables == []

    click = _grads_of(model, model(batch).logits["click"].sum())
    assert {n: g for n, g in click.items() if n.startswith("retention.") and g != 0.0} == {}
    assert click["over_arch.tower.0.weight"] > 0.0

    # The user embedding moves the retention logit: other users, other scores.
    with torch.no_grad():
        before = model(batch).logits["return_7d"]
        user_table[1:] = torch.randn_like(user_table[1:])
        assert not torch.allclose(before, model(batch).logits["return_7d"])
