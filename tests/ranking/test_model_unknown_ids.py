"""IDs the ranking model has no trained row for: the unknown-item vector that cold items
read, and the item- and user-ID dropout that train it and the OOV user row."""

from __future__ import annotations

import pytest
import torch

from data.vocab import OOV_INDEX
from ranking.archs import UnknownItem
from ranking.config import RankingConfig
from ranking.model import RankingModel
from ranking.testing.toy_data import make_batch
from tests.ranking.fixtures import toy_world


def test_out_of_vocabulary_items_read_the_unknown_item_embedding():
    world = toy_world()
    model = RankingModel(world.layout, RankingConfig(embedding_dim=4))
    with torch.no_grad():
        model.sparse_arch.unknown_item.weight.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    batch = world.batches(16, 16, seed=3)[0]
    pooled = {name: jt.values() for name, jt in batch.pooled.to_dict().items()}
    item = batch.target_item_rows.clone()
    item[:5] = OOV_INDEX
    history = batch.hist_item_rows.clone()
    history[:, 0] = OOV_INDEX  # the most recent history item of every row is unknown too
    lengths = batch.hist_mask.sum(1)
    oov = make_batch(world.layout, pooled, item, history, lengths, batch.labels)
    _, target, hist, mask = model.sparse_arch(oov.pooled, oov.sequence)
    table = model.sparse_arch.ec.embeddings["table_item"].weight
    unknown = model.sparse_arch.unknown_item.weight
    torch.testing.assert_close(target[:5], unknown.expand(5, 4))
    torch.testing.assert_close(target[5:], table[item[5:]])
    has = lengths > 0
    torch.testing.assert_close(hist[has, 0], unknown.expand(int(has.sum()), 4))
    rest = mask.clone()
    rest[:, 0] = False
    torch.testing.assert_close(hist[rest], table[history[rest]])


@pytest.mark.parametrize("unknown_rows", [[], [0, 3, 7]])
def test_replace_rows_equals_replace_in_values_and_gradients(unknown_rows):
    item = UnknownItem(4, torch.device("cpu"))
    with torch.no_grad():
        item.weight.copy_(torch.tensor([1.0, -2.0, 3.0, 0.5]))
    unknown = torch.zeros(9, dtype=torch.bool)
    unknown[unknown_rows] = True
    emb = torch.randn(9, 4, generator=torch.Generator().manual_seed(0))
    upstream = torch.randn(9, 4, generator=torch.Generator().manual_seed(1))
    results = []
    for replace in (item.replace, item.replace_rows):
        x = emb.clone().requires_grad_(True)
        item.weight.grad = None
        out = replace(x, unknown)
        (out * upstream).sum().backward()
        w_grad = torch.zeros(4) if item.weight.grad is None else item.weight.grad.clone()
        results.append((out.detach(), x.grad.clone(), w_grad))
    for want, got in zip(results[0], results[1], strict=True):
        torch.testing.assert_close(got, want)
    if not unknown_rows:  # nothing to replace: the input itself, no copy
        x = emb.clone()
        assert item.replace_rows(x, unknown) is x


def _train_forward_and_its_draw(model: RankingModel, batch, p: float, seed: int = 11):
    """One training-mode forward under ``seed``, and the rows its first ``torch.rand(B) < p``
    draw hides (the ID-dropout draw comes first in the forward)."""
    model.train()
    torch.manual_seed(seed)
    out = model(batch)
    torch.manual_seed(seed)
    hide = torch.rand(batch.size) < p
    assert 10 < int(hide.sum()) < batch.size - 10
    return out, hide


def _assert_eval_draws_nothing(model: RankingModel, batch) -> None:
    """Evaluation never hides anything: other random draws give the same scores."""
    model.eval()
    torch.manual_seed(1)
    first = model(batch).logits["click"]
    torch.manual_seed(2)
    torch.testing.assert_close(model(batch).logits["click"], first)


def test_item_id_dropout_hides_target_ids_in_training_only():
    world = toy_world()
    config = RankingConfig(embedding_dim=4, item_id_dropout=0.5, over_arch=(8,))
    model = RankingModel(world.layout, config)
    with torch.no_grad():
        model.sparse_arch.unknown_item.weight.fill_(0.7)
    batch = world.batches(64, 64, seed=4)[0]
    trained, hide = _train_forward_and_its_draw(model, batch, 0.5)
    # The same rows scored in eval mode with their item replaced by the OOV index.
    pooled = {name: jt.values() for name, jt in batch.pooled.to_dict().items()}
    item = torch.where(hide, OOV_INDEX, batch.target_item_rows)
    hidden = make_batch(world.layout, pooled, item, batch.hist_item_rows, batch.hist_mask.sum(1),
                        batch.labels)
    model.eval()
    torch.testing.assert_close(trained.logits["click"], model(hidden).logits["click"])
    # CIC still sees every row's own ID embedding, hidden or not.
    table = model.sparse_arch.ec.embeddings["table_item"].weight
    torch.testing.assert_close(trained.target_item_emb, table[batch.target_item_rows])
    _assert_eval_draws_nothing(model, batch)
    with pytest.raises(ValueError, match="item_id_dropout"):
        RankingConfig(item_id_dropout=1.0)


def test_user_id_dropout_sends_a_share_of_training_rows_to_the_oov_user_row():
    world = toy_world()
    config = RankingConfig(embedding_dim=4, user_id_dropout=0.5, over_arch=(8,))
    model = RankingModel(world.layout, config)
    batch = world.batches(64, 64, seed=4)[0]
    pooled = {name: jt.values() for name, jt in batch.pooled.to_dict().items()}
    assert bool((pooled["user"] != OOV_INDEX).all())  # every toy user is known
    trained, hide = _train_forward_and_its_draw(model, batch, 0.5)
    # The same rows scored in eval mode with their user replaced by the OOV index, and the
    # other pooled features untouched.
    hidden_pooled = dict(pooled, user=torch.where(hide, OOV_INDEX, pooled["user"]))
    hidden = make_batch(world.layout, hidden_pooled, batch.target_item_rows,
                        batch.hist_item_rows, batch.hist_mask.sum(1), batch.labels)
    model.eval()
    torch.testing.assert_close(trained.logits["click"], model(hidden).logits["click"])
    # The OOV row is what training now updates for the hidden rows.
    _train_forward_and_its_draw(model, batch, 0.5)[0].logits["click"].sum().backward()
    table = model.sparse_arch.ebc.embedding_bags["table_user"].weight
    assert float(table.grad[OOV_INDEX].abs().sum()) > 0
    _assert_eval_draws_nothing(model, batch)
    with pytest.raises(ValueError, match="user_id_dropout"):
        RankingConfig(user_id_dropout=1.0)
