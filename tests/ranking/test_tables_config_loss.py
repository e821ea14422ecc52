"""Table configs from the layout, the config dataclass, and the masked multi-task loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from data.batch import FeatureLayout
from ranking.config import RankingConfig
from ranking.loss import multitask_bce
from ranking.tables import (
    ITEM_TABLE,
    pooled_table_configs,
    resolve_table,
    sequence_table_configs,
    table_name,
    table_names,
    table_rows,
)

LAYOUT = FeatureLayout(pooled={"user": 11, "user_age": 4, "item_brand": 7, "ctx_device": 3},
                       item_vocab_size=20, max_history=5, labels=("click", "like"),
                       retention_labels=("return_7d",), num_items=25)


def test_tables_follow_the_vocabularies():
    pooled = pooled_table_configs(LAYOUT, 8)
    assert [(c.name, c.num_embeddings, c.embedding_dim, c.feature_names) for c in pooled] == [
        ("table_user", 11, 8, ["user"]), ("table_user_age", 4, 8, ["user_age"]),
        ("table_item_brand", 7, 8, ["item_brand"]), ("table_ctx_device", 3, 8, ["ctx_device"])]
    (item,) = sequence_table_configs(LAYOUT, 8)
    # One table for the target and the history: the same item has one ID embedding.
    assert (item.name, item.num_embeddings, item.feature_names) == (ITEM_TABLE, 20,
                                                                     ["item", "hist_item"])
    assert table_names(LAYOUT)[-1] == ITEM_TABLE
    assert table_rows(LAYOUT, 8)["table_item_brand"] == (7, 8)


def test_table_names_cannot_clash_with_module_attributes():
    # A bare "items"/"keys"/"values" table breaks nn.ModuleDict; prefixed names do not.
    layout = FeatureLayout(pooled={"items": 3, "keys": 3, "values": 3, "user.age": 2},
                           item_vocab_size=4, max_history=2, labels=("click",))
    ebc = EmbeddingBagCollection(tables=pooled_table_configs(layout, 4))
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=list(layout.pooled), values=torch.tensor(
        [1, 2, 0, 1, 2, 2, 1, 0]), lengths=torch.ones(8, dtype=torch.int64))
    assert ebc(kjt).to_dict()["items"].shape == (2, 4)
    assert table_name("user.age") == "table_user_age"
    clash = FeatureLayout(pooled={"user.age": 2, "user_age": 2}, item_vocab_size=4,
                          max_history=2, labels=("click",))
    with pytest.raises(ValueError, match="same table name"):
        pooled_table_configs(clash, 4)


def test_sharding_keys_resolve_by_table_or_feature_name():
    names = table_names(LAYOUT)
    assert resolve_table("item", names) == resolve_table("table_item", names) == ITEM_TABLE
    with pytest.raises(ValueError, match="unknown table 'movie'"):
        resolve_table("movie", names)


def test_config_round_trips_and_rejects_mistakes():
    config = RankingConfig.from_dict({"embedding_dim": 8, "over_arch": [32, 16],
                                      "table_sharding": {"item": {"sharding_type": "table_wise"}}})
    assert config.over_arch == (32, 16) and not config.uses_content
    assert RankingConfig.from_dict(config.to_dict()) == config
    assert RankingConfig(content_dim=4).attends_history_content
    assert not RankingConfig(content_dim=4, use_history_content=False).attends_history_content
    for bad, match in [({"interaction": "fm"}, "interaction"), ({"embeding_dim": 8}, "unknown"),
                       ({"sparse_optimizer": "lamb"}, "sparse_optimizer"),
                       ({"table_sharding": {"item": {"sharding": "tw"}}}, "unknown keys"),
                       ({"table_sharding": {"item": {"sharding_type": "tw"}}}, "sharding_type"),
                       ({"dropout": 1.0}, "dropout")]:
        with pytest.raises(ValueError, match=match):
            RankingConfig.from_dict(bad)


def test_multitask_bce_averages_each_head_over_its_known_rows():
    logits = {"click": torch.tensor([0.5, -1.0, 2.0, 0.0]),
              "return_7d": torch.tensor([1.0, -2.0, 0.3, 0.7])}
    labels = {"click": torch.tensor([1.0, 0.0, 1.0, 0.0]),
              "return_7d": torch.tensor([1.0, 0.0, 0.0, 1.0])}
    masks = {"return_7d": torch.tensor([True, False, False, True])}
    total, per_head = multitask_bce(logits, labels, masks, weights={"return_7d": 0.5})
    click = F.binary_cross_entropy_with_logits(logits["click"], labels["click"])
    known = [0, 3]
    ret = F.binary_cross_entropy_with_logits(logits["return_7d"][known],
                                             labels["return_7d"][known])
    torch.testing.assert_close(per_head["click"], click)
    torch.testing.assert_close(per_head["return_7d"], ret)
    torch.testing.assert_close(total, click + 0.5 * ret)


def test_multitask_bce_with_every_label_censored_is_zero_not_nan():
    logit = torch.zeros(3, requires_grad=True)
    total, _ = multitask_bce({"return_7d": logit}, {"return_7d": torch.zeros(3)},
                             {"return_7d": torch.zeros(3, dtype=torch.bool)})
    total.backward()
    assert total.item() == 0.0 and torch.equal(logit.grad, torch.zeros(3))
    with pytest.raises(KeyError, match="no labels for head 'like'"):
        multitask_bce({"like": logit}, {"click": torch.zeros(3)})


@pytest.mark.parametrize("kwargs, says", [
    ({"embedding_dim": 0}, "embedding_dim: must be >= 1, got 0"),
    ({"dropout": 1.0}, "dropout: must be <= 0.99, got 1.0"),
    ({"interaction": "fm"}, "interaction: must be one of ['dcn', 'dlrm'], got 'fm'"),
    ({"bag_pooling": "max"}, "bag_pooling: must be one of ['mean', 'sum']"),
    ({"sparse_optimizer": "lamb"}, "sparse_optimizer: must be one of"),
    ({"dense_lr": -1.0}, "dense_lr: must be >= 0.0"),
])
def test_ranking_config_checks_the_declared_choices_and_bounds(kwargs, says) -> None:
    # The same declarations and messages as every other config section (recsys's loader).
    from ranking.config import RankingConfig

    with pytest.raises(ValueError) as err:
        RankingConfig(**kwargs)
    assert says in str(err.value)
