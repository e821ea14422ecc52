"""No setting is silently ignored (issue 27): each leaf setting of ``TrainConfig``, enumerated
from the dataclasses (so a setting added without a probe fails: "no probe for ..."), is set
to a non-default value as ``recsys train --set`` sets it, and a probe sees it take effect in
what training builds or does (data, token features, the seeded model's structure, outputs and
loss on a fixed batch, optimizers, the loop, the run directory, MLflow) or sees it refused
with an error naming it. A setting that is a no-op by design somewhere (the Q-Former's under
``fusion = "pooled"``, LoRA's outside ``seq_mode = "lora"``) is probed where it matters.
The builders are in ``settings_lab.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import pytest
import torch

from data.dataset import load_dataset
from data.errors import DataError
from recsys.config import TrainConfig
from recsys.config_io import config_to_dict, flatten
from recsys.errors import UsageError
from recsys.training.perf import compile_unavailable
from tests.recsys.settings_lab import (
    Lab,
    count,
    differ,
    features,
    hist_len,
    leaf_settings,
    logits,
    lora_targets,
    lrs,
    shapes,
    spy_compile,
    widths,
)

LEAVES = leaf_settings(TrainConfig)
PROBES: dict[str, list[Callable[[Lab], None]]] = {}


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Iterator[Lab]:
    yield from Lab.opened(tmp_path_factory)


def test_every_leaf_setting_is_enumerated():
    """The enumeration covers what a run's config.toml holds, and every probe names a
    setting that exists."""
    assert set(flatten(config_to_dict(TrainConfig()))) <= set(LEAVES)
    assert set(PROBES) <= set(LEAVES), sorted(set(PROBES) - set(LEAVES))


@pytest.mark.parametrize("key", LEAVES)
def test_setting_takes_effect_or_is_refused(key: str, lab: Lab):
    if key not in PROBES:
        pytest.fail(f"no probe for {key}: add one to {__name__} (set it, then see it take effect "
                    "in what recsys train builds or does, or see it refused)")
    for check in PROBES[key]:
        check(lab)


def probe(*keys: str) -> Callable:
    def register(fn: Callable[[Lab], None]) -> Callable[[Lab], None]:
        for key in keys:
            PROBES.setdefault(key, []).append(fn)
        return fn
    return register


# The model's structure: (--set values, check, context): ``check`` holds for the model built
# with the values and not for the one built without them (both with ``context``).
STRUCTURE = {
    "content.enabled": (["content.enabled=false"],
                        lambda f: f.em3.content is None and f.out.target_content is None),
    "content.fusion": (['content.fusion="pooled"'],
                       lambda f: set(shapes(f, "content.")) == {"proj.weight", "proj.bias"},
                       ['content.seq_mode="frozen"']),
    "content.variant": (['content.variant="cross"'],
                        lambda f: any("cross_attn" in n for n in shapes(f, "content."))),
    "content.hidden": (["content.hidden=12"], lambda f: f.out.target_content.shape[1] == 12),
    "content.layers": (["content.layers=3"], lambda f: len(
        {n.split(".")[0] for n in shapes(f, "content.qformer.blocks.")}) == 3),
    "content.num_queries": (["content.num_queries=5"],
                            lambda f: shapes(f, "content.qformer.")["queries"][0] == 5),
    "content.lora_r": (["content.lora_r=3"], lambda f: {
        s[0] for n, s in shapes(f, "content.").items() if "lora_A" in n} == {3}),
    "content.lora_targets": (['content.lora_targets=["key", "fc1"]'],
                             lambda f: lora_targets(f) == {"key", "fc1"}),
    "ranking.embedding_dim": (["ranking.embedding_dim=12"],
                              lambda f: f.out.target_item_emb.shape[1] == 12),
    "ranking.attention_hidden": (["ranking.attention_hidden=[24, 12]"],
                                 lambda f: widths(f, "ranking.attention.") == [24, 12, 1]),
    "ranking.interaction": (['ranking.interaction="dlrm"'],
                            lambda f: not shapes(f, "ranking.interaction.")),
    "ranking.dcn_layers": (["ranking.dcn_layers=3"],
                           lambda f: len(widths(f, "ranking.interaction.")) == 3),
    "ranking.dcn_low_rank": (["ranking.dcn_low_rank=4"],  # U of each layer: r x width
                             lambda f: widths(f, "ranking.interaction.")[::2] == [4, 4]),
    "ranking.over_arch": (["ranking.over_arch=[24, 12]"],
                          lambda f: widths(f, "ranking.over_arch.") == [24, 12]),
    "ranking.retention_heads": (["ranking.retention_heads=false"],
                                lambda f: set(f.out.logits) == {"click", "like"}),
    "ranking.retention_own_tower": (["ranking.retention_own_tower=true"],
                                    lambda f: bool(shapes(f, "ranking.retention."))),
    "ranking.retention_hidden": (["ranking.retention_hidden=[7]"],
                                 lambda f: widths(f, "ranking.retention.mlp.") == [7],
                                 ["ranking.retention_own_tower=true"]),
    "ranking.prior_offset": (["ranking.prior_offset=false"],
                             lambda f: not shapes(f, "ranking.prior_offset.")),
    "cic.proj_dim": (["cic.proj_dim=5"], lambda f: widths(f, "cic.") == [5, 5]),
    "interest.proj_dim": (["interest.proj_dim=5"], lambda f: widths(f, "interest.") == [5]),
}


def structure(sets: list[str], check: Callable, context: Sequence[str] = (), *, lab: Lab) -> None:
    assert check(lab.forward(*context, *sets)) and not check(lab.forward(*context))


# The same weights (same shapes, same seed) compute other outputs.
OTHER_OUTPUT = {"content.heads": "content.heads=4",
                "ranking.attention_softmax": "ranking.attention_softmax=true",
                "ranking.cpu_precision": 'ranking.cpu_precision="bf16"',  # a bf16 dense tower
                "content.cpu_precision": 'content.cpu_precision="bf16"'}  # a bf16 Q-Former


def other_output(setting: str, *, lab: Lab) -> None:
    fwd, base = lab.forward(setting), lab.base()
    same = zip(fwd.em3.parameters(), base.em3.parameters(), strict=True)
    assert shapes(fwd, "") == shapes(base, "") and all(torch.equal(a, b) for a, b in same)
    assert differ(logits(fwd), logits(base))


# Random in training only: two train-mode forwards (other seeds) differ; eval is unchanged.
RANDOM_IN_TRAINING = {"content.dropout": "content.dropout=0.5",
                      "ranking.dropout": "ranking.dropout=0.5",
                      "ranking.item_id_dropout": "ranking.item_id_dropout=0.5",
                      "ranking.user_id_dropout": "ranking.user_id_dropout=0.5"}


def random_in_training(setting: str, *, lab: Lab) -> None:
    def twice(*sets: str) -> tuple[torch.Tensor, torch.Tensor]:
        return (logits(lab.forward(*sets, train=True)),
                logits(lab.forward(*sets, train=True, seed=1)))

    assert differ(*twice(setting)) and not differ(*twice())
    assert not differ(logits(lab.forward(setting)), logits(lab.base()))


# Refused when the config is read, with an error naming the setting and what to set instead.
REFUSED = {"ranking.content_dim": ("ranking.content_dim=16", "content.hidden"),
           "ranking.use_history_content": ("ranking.use_history_content=false", "content.seq_mode"),
           "ranking.dense_weight_decay": ("ranking.dense_weight_decay=0.01", "optim.weight_decay"),
           "content.fusion": ('content.fusion="pooled"', "seq_mode"),  # with the LoRA history
           "train.early_stop_metric": ('train.early_stop_metric="ndcg"', "logloss")}
# Refused when the model is built (this device has no kernel for them).
REFUSED_AT_BUILD = {
    "ranking.sparse_optimizer": ('ranking.sparse_optimizer="adam"', "sparse_optimizer 'adam'"),
    "ranking.table_sharding": ('ranking.table_sharding={user={sharding_type="row_wise"}}',
                               "row_wise sharding of pooled table 'table_user'"),
}


def refused(setting: str, instead: str, *, lab: Lab) -> None:
    with pytest.raises(UsageError) as err:
        lab.cfg(setting)
    assert setting.split("=")[0].split(".")[-1] in str(err.value) and instead in str(err.value)


def refused_at_build(setting: str, says: str, *, lab: Lab) -> None:
    with pytest.raises(UsageError) as err:
        lab.build(lab.cfg(setting, preset="id_only"))
    assert says in str(err.value) and "needs CUDA" in str(err.value)


# (observe(lab, *sets), the setting, check(observed with it, observed without it)).
USER_PRIOR = {"prior_logit", "prior_rate", "prior_rows"}
ITEM_PRIOR = {"prior_item_logit", "prior_item_rate", "prior_item_rows"}


def grows(**weights: float) -> Callable:
    """The total loss grows by ``weight`` times each part (of the base)."""
    return lambda f, b: f.loss - b.loss == pytest.approx(
        sum(w * b.parts[part] for part, w in weights.items()), rel=1e-4)


def groups(key: str, want: list[float]) -> Callable:
    return lambda g, b: lrs(g, key) == want != lrs(b, key)


COMPARED = {
    "data.max_history": (Lab.data, "data.max_history=3", lambda d, b: d.layout.max_history == 3
                         and hist_len(d) == 3 < hist_len(b)),
    # user_time: every user with enough rows has some in test.
    "data.split": (Lab.data, 'data.split="user_time"',
                   lambda d, b: count(d, "test", "user_id") > count(b, "test", "user_id")),
    "data.tail_days": (Lab.data, "data.tail_days=2",
                       lambda d, b: 0 < count(d, "tail") < count(b, "tail")),
    "data.prior_rate": (Lab.data, "data.prior_rate=false",
                        lambda d, b: not USER_PRIOR & features(d) and features(b) >= USER_PRIOR),
    "data.item_prior_rate": (Lab.data, "data.item_prior_rate=false",
                             lambda d, b: not ITEM_PRIOR & features(d)
                             and features(b) >= ITEM_PRIOR),
    "content.tokens": (lambda lab, *sets: lab.tokens(lab.cfg(*sets)).text.shape[1],
                       "content.tokens=3", lambda n, b: n == 3 < b),
    "content.lora_alpha": (Lab.lora_history, "content.lora_alpha=32", differ),
    "content.dedup": (Lab.qformer_rows, "content.dedup=false", lambda r, b: r[0] > b[0]),
    "ranking.detach_history_ids": (Lab.rows_updated, "ranking.detach_history_ids=false",
                                   lambda r, b: r > b),
    "ranking.table_sharding": (Lab.user_table,
                               'ranking.table_sharding={user={sharding_type="table_wise"}}',
                               lambda t, b: b["sharding_type"] == "data_parallel" and t == {
                                   **b, "sharding_type": "table_wise", "compute_kernel": "fused"}),
    # Row-wise Adagrad's first step, lr * g / (sqrt(mean g²) + eps): the largest change of
    # an item-table entry.
    "ranking.sparse_optimizer": (Lab.item_update, 'ranking.sparse_optimizer="sgd"',
                                 lambda u, b: u < b / 10),
    "ranking.sparse_lr": (Lab.item_update, "ranking.sparse_lr=0.2",
                          lambda u, b: abs(u / b - 4) < 4e-3),
    "ranking.sparse_eps": (Lab.item_update, "ranking.sparse_eps=1.0", lambda u, b: u < b / 10),
    "ranking.dense_optimizer": (Lab.dense_groups, 'ranking.dense_optimizer="sgd"',
                                lambda g, b: {"momentum" in x for x in g.values()} == {True}
                                and {"momentum" in x for x in b.values()} == {False}),
    "ranking.dense_lr": (Lab.dense_groups, "ranking.dense_lr=0.011",
                         groups("lr", [0.011, 1e-3, 2e-3])),
    "optim.qformer_lr": (Lab.dense_groups, "optim.qformer_lr=0.012",
                         groups("lr", [1e-3, 0.012, 2e-3])),
    "optim.adapter_lr": (Lab.dense_groups, "optim.adapter_lr=0.013",
                         groups("lr", [1e-3, 1e-3, 0.013])),
    "optim.weight_decay": (Lab.dense_groups, "optim.weight_decay=0.02",
                           groups("weight_decay", [0.02] * 3)),
    # The loss on the fixed batch.
    "cic.weight": (Lab.forward, "cic.weight=0.5", grows(cic=0.4)),
    "interest.weight": (Lab.forward, "interest.weight=2.0", grows(interest=1.0)),
    "loss.retention_weight": (Lab.forward, "loss.retention_weight=1.0",
                              grows(bce_return_7d=0.8, bce_return_14d=0.8)),
    "cic.temperature": (Lab.forward, "cic.temperature=1.0",
                        lambda f, b: f.parts["cic"] != pytest.approx(b.parts["cic"])),
    "interest.temperature": (Lab.forward, "interest.temperature=1.0", lambda f, b:
                             f.parts["interest"] != pytest.approx(b.parts["interest"])),
}


def compared(observe: Callable, setting: str, check: Callable, *, lab: Lab) -> None:
    with_it, without = observe(lab, setting), observe(lab)
    assert check(with_it, without), (with_it, without)


# The id_only loop with LOOP (``seen``) against the loop without (``base``).
LOOP = ("train.batch_size=64", "train.eval_batch_size=300", "train.max_steps_per_epoch=2",
        "train.checkpoint_every=1", "optim.grad_clip=0.001", "train.seed=7", "train.threads=2")
LOOP_SEEN = {
    "train.batch_size": lambda s, b: s["train_sizes"] == [64, 64] and b["train_sizes"] == [256],
    "train.max_steps_per_epoch": lambda s, b: s["steps_per_epoch"] == s["step"] == 2
    < s["loader"],
    # Mid-epoch checkpoints after steps 1 and 2 (none at the default, every 100 steps).
    "train.checkpoint_every": lambda s, b: s["checkpoints"] == [1, 2],
    "optim.grad_clip": lambda s, b: abs(s["grad_norm"] - 1e-3) < 1e-6 and b["grad_norm"] > 1e-2,
    "train.threads": lambda s, b: s["threads"] == 2 and b["threads"] == 1,
    "train.compile": lambda s, b: b["compiled"] == 0,  # "off" in BASE; "on" below
    # Scoring pads the last batch to the full batch size.
    "train.eval_batch_size": lambda s, b: s["eval_sizes"] == [300] * -(-s["valid_rows"] // 300)
    and b["eval_sizes"] == [1024] * -(-b["valid_rows"] // 1024),
    # Other initial weights, another shuffle (the first 64 rows of each epoch's order).
    "train.seed": lambda s, b: differ(s["init"], b["init"])
    and differ(s["first"].row_id, b["first"].row_id[:64]),
}


def loop_seen(check: Callable, *, lab: Lab) -> None:
    seen, base = lab.loop(*LOOP), lab.loop()
    assert check(seen, base), {k: (v, base[k]) for k, v in seen.items() if k != "first"}


# ``fit`` with scripted validation (AUC best at epochs 1 and 4, logloss falling every epoch).
LOGLOSS = ("train.patience=0", 'train.early_stop_metric="logloss"')
FIT = {"train.patience": (("train.patience=0",),  # the default (1) would train 3 epochs
                          lambda st: len(st.history) == 2 and st.stopped_early),
       "train.early_stop_metric": (LOGLOSS,
                                   lambda st: len(st.history) == 4 and st.best_epoch == 3),
       # logloss improves every epoch: training ends at train.epochs = 4 (the default is 3)
       "train.epochs": (LOGLOSS, lambda st: [h["epoch"] for h in st.history] == [1, 2, 3, 4])}


def fit(sets: tuple[str, ...], check: Callable, *, lab: Lab) -> None:
    assert check(lab.scripted_fit(*sets))


for table, check in ((STRUCTURE, structure), (OTHER_OUTPUT, other_output),
                     (RANDOM_IN_TRAINING, random_in_training), (COMPARED, compared),
                     (REFUSED, refused), (REFUSED_AT_BUILD, refused_at_build),
                     (LOOP_SEEN, loop_seen), (FIT, fit)):
    for name, entry in table.items():
        args = entry if isinstance(entry, tuple) else (entry,)
        probe(name)(lambda lab, check=check, args=args: check(*args, lab=lab))


# ---- the rest, one probe each -------------------------------------------------------------

@probe("name", "data.dir", "data.allow_missing_media", "tracking.enabled")
def _(lab):
    # recsys train on the other world (an image missing) with these four set.
    got = lab.cli_run()
    assert got["run"].name.startswith("probe-name-")  # the default --out
    assert (got["meta"]["dataset"]["dir"], got["meta"]["status"]) == (str(lab.other), "finished")
    assert got["meta"]["tracking"]["run_id"] is None and not got["meta"]["tracking"]["synced"]
    assert got["files"] == ["runs"]  # no mlflow.db in the working directory either


@probe("data.allow_missing_media")
def _(lab):
    with pytest.raises(DataError, match="image"):
        lab.trainer(world=lab.other)


@probe("content.vision", "content.text")
def _(lab):
    vision, text = lab.vectors["vision"], lab.vectors["text"]
    tokens = lab.tokens(lab.cfg(f'content.vision="{vision}"', f'content.text="{text}"'))
    ids = load_dataset(lab.world).items["item_id"].to_numpy()
    for got, path in ((tokens.vision, vision), (tokens.text, text)):
        want = torch.from_numpy(np.load(path)[ids])
        assert got.shape == (len(ids), 1, want.shape[1])  # one token per item
        assert torch.allclose(got[:, 0].float(), want, atol=1e-2)


@probe("content.seq_mode")
def _(lab):
    none = lab.forward('content.seq_mode="none"')
    assert none.out.hist_content is None and none.em3.interest is None
    # frozen and full: history content without adapters; full trains the base weights
    # through it too (frozen: no gradient there), so the same weights get other gradients.
    steps = {mode: lab.step(f'content.seq_mode="{mode}"')[0] for mode in ("frozen", "full")}
    for fwd in steps.values():
        assert fwd.out.hist_content is not None and not lora_targets(fwd)
    assert lora_targets(lab.base())
    assert differ(*[torch.cat([p.grad.flatten() for p in fwd.em3.content.qformer_parameters()])
                    for fwd in steps.values()])


@probe("content.lora_dropout")
def _(lab):
    def twice(*sets):
        return (lab.lora_history(*sets, train=True), lab.lora_history(*sets, train=True, seed=1))

    assert differ(*twice("content.lora_dropout=0.5")) and not differ(*twice())


@probe("content.checkpoint_history")
def _(lab):
    # lora's default checkpoints all history chunks but the last: the lab's batch is one.
    assert lab.qformer_rows()[1] == 0
    assert lab.qformer_rows("content.checkpoint_history=true")[1] > 0  # every chunk recomputed
    assert lab.qformer_rows("content.checkpoint_history=false")[1] == 0
    assert lab.qformer_rows('content.seq_mode="full"')[1] == 0  # full's default: kept
    assert lab.qformer_rows('content.seq_mode="full"', "content.checkpoint_history=true")[1] > 0


@probe("ranking.bag_pooling")
def _(lab):
    sets = ("data.allow_missing_media=true",)
    mean = lab.forward(*sets, preset="id_only", world=lab.other)
    total = lab.forward(*sets, 'ranking.bag_pooling="sum"', preset="id_only", world=lab.other)
    assert "item_tags" in lab.prepared(lab.cfg(*sets, world=lab.other)).layout.bags
    assert shapes(mean, "") == shapes(total, "") and differ(logits(mean), logits(total))


@probe("train.compile")
def _(lab):
    compiled: list = []
    with spy_compile(compiled):
        if compile_unavailable(torch.device("cpu")) is None:
            lab.trainer('train.compile="on"')
            assert compiled
        else:
            with pytest.raises(UsageError, match="train.compile"):
                lab.trainer('train.compile="on"')


@probe("interest.warmup_epochs")
def _(lab):
    trainer = lab.trainer("interest.warmup_epochs=1.5", preset="em3")
    scale = 1 / round(1.5 * trainer.steps_per_epoch)
    assert trainer.interest_scale(0) == pytest.approx(scale)
    p = trainer.train_step(next(iter(trainer.loader)))
    bce = p["bce_click"] + p["bce_like"] + 0.2 * (p["bce_return_7d"] + p["bce_return_14d"])
    assert p["loss"] == pytest.approx(bce + 0.1 * p["cic"] + scale * p["interest"], rel=1e-4)


@probe("tracking.uri", "tracking.model_name")
def _(lab):
    from mlflow import MlflowClient

    meta, uri = lab.tracked_run()
    assert meta["model_name"] == "probe-ranker" and meta["tracking"]["uri"] == uri
    client = MlflowClient(uri, registry_uri=uri)
    assert client.get_run(meta["tracking"]["run_id"]).info.status == "FINISHED"
    versions = client.search_model_versions("name = 'probe-ranker'")
    assert meta["tracking"]["synced"] and [v.run_id for v in versions] == [
        meta["tracking"]["run_id"]]


def blocks_in(order: np.ndarray, rows: int, block_rows: int) -> int:
    """How many logical blocks (``block_rows`` split positions each) the first ``rows``
    streamed rows come from."""
    return len(np.unique(order[:rows] // block_rows))


@probe("data.block_rows")
def _(lab):
    # Blocks of 100 rows, 10 to a buffer: the first 1000 rows are 10 whole blocks; with the
    # default (one block holds the tiny split) they come from all over it.
    order = lab.shard_order("data.block_rows=100", "data.shuffle_buffer_rows=1000")
    assert blocks_in(order, 1000, 100) == 10 < blocks_in(lab.shard_order(), 1000, 100)
    assert sorted(np.bincount(order[:1000] // 100)[order[:1000] // 100]) == [100] * 1000


@probe("data.shuffle_buffer_rows")
def _(lab):
    # Buffers of 2 blocks against 10: the first 200 rows are 2 blocks, not ~10.
    two = lab.shard_order("data.block_rows=100", "data.shuffle_buffer_rows=200")
    ten = lab.shard_order("data.block_rows=100", "data.shuffle_buffer_rows=1000")
    assert blocks_in(two, 200, 100) == 2 < blocks_in(ten, 200, 100)
    with pytest.raises(UsageError, match="data.shuffle_buffer_rows"):
        lab.cfg("data.shuffle_buffer_rows=10")  # less than one block (data.block_rows)
