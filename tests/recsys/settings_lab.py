"""What tests/recsys/test_settings_take_effect.py probes: configs read the way `recsys train`
reads them (`--set` strings), the data, token features and seeded models that its build path
makes from them, their outputs and losses on one fixed batch, Trainers and whole runs.

Everything is built lazily and memoised, so each probe pays only for what it looks at.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import polars as pl
import pytest
import torch
import torch.distributed as dist

import recsys.training.train
from data.batch import Batch
from data.dataset import load_dataset
from data.loader import BatchLoader
from data.prepare import Prepared, prepare
from data.shards import load_prepared, write_shards
from ranking.dist import DistEnv, destroy_process_group, init_process_group_from_env
from ranking.sharding import table_placements
from recsys.config import TrainConfig, load_train_config
from recsys.model.build import build_model
from recsys.model.content_setup import load_item_tokens
from recsys.model.em3 import EM3Model
from recsys.training.optim import build_optimizer
from recsys.training.train import Trainer, TrainState, seed_everything, train
from recsys.training.train_data import open_train_data
from tests.recsys.run_fixtures import fresh_store
from tests.recsys.train_fixtures import TINY, make_world

# The tiny settings of the training tests, eager (a compiled tower costs a compilation per
# model) and with no random ID hiding, so a train-mode forward is deterministic unless the
# probed setting makes it random.
BASE = [*TINY, 'train.compile="off"', "ranking.user_id_dropout=0.0", "ranking.item_id_dropout=0.0"]
ROWS = 64  # rows of the fixed batch


def leaf_settings(cls: type = TrainConfig, prefix: str = "") -> list[str]:
    """Every dotted leaf key of a config dataclass tree, from its fields (not from
    ``flatten(config_to_dict(...))``, which drops an empty table and a None value)."""
    hints = typing.get_type_hints(cls)
    keys: list[str] = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            keys += leaf_settings(hints[f.name], f"{prefix}{f.name}.")
        else:
            keys.append(f"{prefix}{f.name}")
    return keys


def other_world(world: Path, out: Path) -> Path:
    """A copy of ``world`` with a multi-valued item feature ``tags`` (bags of 0, 1 or 3
    values) and one item image missing."""
    shutil.copytree(world, out)
    items = pl.read_parquet(out / "items.parquet")
    sizes = np.random.default_rng(0).choice([0, 1, 3], items.height)
    tags = [[f"t{k}" for k in range(n)] for n in sizes]
    items.with_columns(pl.Series("tags", tags, dtype=pl.List(pl.String))).write_parquet(
        out / "items.parquet")
    spec = (out / "dataset.toml").read_text()
    (out / "dataset.toml").write_text(spec.replace('categorical = ["brand", "year"]',
                                                   'categorical = ["brand", "year", "tags"]'))
    next((out / "images").iterdir()).unlink()
    return out


class Forward(NamedTuple):
    """A seeded model, its output on the fixed batch and its loss (total, parts)."""

    model: torch.nn.Module
    em3: EM3Model
    out: Any
    loss: float
    parts: dict[str, float]


def inner(model: torch.nn.Module) -> EM3Model:
    """The EM3 module inside a ``build_model`` result."""
    return getattr(model, "module", model)


def table(model: torch.nn.Module, name: str) -> torch.Tensor:
    """A copy of embedding table ``name`` (e.g. ``table_item``) of a sharded model."""
    for key, value in model.state_dict().items():
        if key.endswith(f".{name}.weight"):
            if hasattr(value, "local_shards"):
                value = value.local_shards()[0].tensor
            return value.detach().clone()
    raise KeyError(name)


def differ(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape != b.shape or not torch.allclose(a.float(), b.float(), rtol=0, atol=1e-7)


def logits(fwd: Forward) -> torch.Tensor:
    return torch.stack([fwd.out.logits[k].float() for k in sorted(fwd.out.logits)])


def shapes(fwd: Forward, prefix: str) -> dict[str, tuple[int, ...]]:
    """Shapes of the EM3 module's dense parameters under ``prefix`` (prefix removed)."""
    return {n[len(prefix):]: tuple(p.shape) for n, p in fwd.em3.named_parameters()
            if n.startswith(prefix)}


def widths(fwd: Forward, prefix: str) -> list[int]:
    """Output widths of the linear layers under ``prefix``, in order."""
    return [s[0] for s in shapes(fwd, prefix).values() if len(s) == 2]


def lora_targets(fwd: Forward) -> set[str]:
    """The Q-Former layers that carry LoRA adapters."""
    return {n.split(".lora_")[0].split(".")[-1] for n in shapes(fwd, "content.") if "lora_" in n}


def features(data: Prepared) -> set[str]:
    return {*data.layout.dense, *data.layout.pooled}


def count(data: Prepared, split: str, column: str | None = None) -> int:
    """Rows of ``split``, or distinct values of ``column`` there."""
    rows = data.frame.filter(data.frame["split"] == split)
    return rows.height if column is None else rows[column].n_unique()


def hist_len(data: Prepared) -> int:
    return data.frame["hist_rows"].list.len().max()


def lrs(groups: dict[str, dict], key: str = "lr") -> list[float]:
    """``key`` of the dense optimizer's groups ranking, qformer, adapters."""
    return [groups[name][key] for name in ("ranking", "qformer", "adapters")]


@contextlib.contextmanager
def spy_compile(calls: list) -> Iterator[None]:
    """Replaces ``torch.compile`` by a spy that records what it is given and leaves it eager."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch, "compile", lambda fn, **kwargs: calls.append(fn) or fn)
        yield


class Lab:
    def __init__(self, root: Path, env: DistEnv, basetemp: Path) -> None:
        self.root, self.env, self.basetemp = root, env, basetemp
        self.world = make_world(root)
        self.other = other_world(self.world, root / "other")
        self._runs, self._cache = 0, {}
        ids = load_dataset(self.world).items["item_id"].to_numpy()
        rng = np.random.default_rng(1)
        self.vectors = {}
        for modality, width in (("vision", 6), ("text", 5)):
            np.save(root / f"{modality}.npy",
                    rng.normal(size=(int(ids.max()) + 1, width)).astype(np.float32))
            self.vectors[modality] = root / f"{modality}.npy"

    @classmethod
    def opened(cls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
        """A lab in a world of one process, one intra-op thread (what the tests run with)
        and no MFU benchmark per Trainer (a timed matmul, irrelevant here)."""
        created = not dist.is_initialized()
        env = init_process_group_from_env()
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(recsys.training.train, "peak_flops", lambda device, dtype=None: 1.0)
            yield cls(tmp_path_factory.mktemp("settings"), env, tmp_path_factory.getbasetemp())
        torch.set_num_threads(threads)
        if created:
            destroy_process_group()

    def memo(self, key: tuple, make: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def run_dir(self, name: str = "run") -> Path:
        self._runs += 1
        return self.root / "runs" / f"{name}-{self._runs}"

    def cfg(self, *sets: str, preset: str = "em3", world: Path | None = None) -> TrainConfig:
        return load_train_config(preset, [*BASE, f'data.dir="{world or self.world}"', *sets])

    # ---- what recsys train builds --------------------------------------------------------

    def prepared(self, cfg: TrainConfig) -> Prepared:
        allow = cfg.data.allow_missing_media
        return self.memo(("prepared", cfg.data.dir, allow, repr(cfg.prepare_config())),
                         lambda: prepare(load_dataset(cfg.data.dir, allow_missing_media=allow),
                                         cfg.prepare_config()))

    def data(self, *sets: str) -> Prepared:
        return self.prepared(self.cfg(*sets))

    def tokens(self, cfg: TrainConfig):
        """The token features ``recsys train`` loads for ``cfg`` (None without content)."""
        c = cfg.content
        if not c.enabled:
            return None
        dataset = load_dataset(cfg.data.dir, allow_missing_media=True)
        return self.memo(("tokens", cfg.data.dir, c.vision, c.text, c.tokens),
                         lambda: load_item_tokens(cfg, dataset, self.env, progress=False))

    def build(self, cfg: TrainConfig) -> torch.nn.Module:
        """A fresh model as ``recsys train`` builds it (seeded, sharded)."""
        prepared, tokens = self.prepared(cfg), self.tokens(cfg)
        seed_everything(cfg.train.seed)
        return build_model(cfg, prepared.layout, tokens, self.env)

    def model(self, *sets: str, preset: str = "em3", world: Path | None = None) -> torch.nn.Module:
        """``build`` of ``cfg(*sets)``, shared: for forwards without gradient only."""
        return self.memo(("model", preset, world, *sets),
                         lambda: self.build(self.cfg(*sets, preset=preset, world=world)))

    def batch(self, cfg: TrainConfig) -> Batch:
        return next(iter(BatchLoader(self.prepared(cfg), "train", ROWS, shuffle=True, seed=0)))

    def forward(self, *sets: str, preset: str = "em3", world: Path | None = None,
                train: bool = False, model: torch.nn.Module | None = None,
                seed: int = 0) -> Forward:
        """The output and loss on the fixed batch (no gradient; eval mode unless ``train``;
        ``seed`` seeds what a train-mode forward draws)."""
        cfg = self.cfg(*sets, preset=preset, world=world)
        model = model if model is not None else self.model(*sets, preset=preset, world=world)
        batch = self.batch(cfg)
        model.train(train)
        torch.manual_seed(seed)
        with torch.no_grad():
            out = model(batch)
            loss, parts = inner(model).loss(out, batch)
        return Forward(model, inner(model), out, float(loss), parts)

    def base(self) -> Forward:  # the model built without the probed setting
        return self.memo(("base",), self.forward)

    def step(self, *sets: str, preset: str = "em3") -> tuple[Forward, torch.Tensor]:
        """One training forward and backward on the fixed batch; returns the forward and the
        change of the item table (its fused optimizer updates it inside backward)."""
        cfg = self.cfg(*sets, preset=preset)
        model = self.build(cfg)
        before = table(model, "table_item")
        batch = self.batch(cfg)
        model.train()
        torch.manual_seed(0)
        out = model(batch)
        loss, parts = inner(model).loss(out, batch)
        loss.backward()
        return (Forward(model, inner(model), out, float(loss), parts),
                table(model, "table_item") - before)

    def item_update(self, *sets: str) -> float:
        """The largest change of an id_only item table entry in one training step."""
        return self.memo(("item_update", *sets),
                         lambda: float(self.step(*sets, preset="id_only")[1].abs().max()))

    def rows_updated(self, *sets: str) -> int:
        """Item-table rows that one training step changes."""
        return int((self.step(*sets)[1].abs().sum(dim=1) > 0).sum())

    def user_table(self, *sets: str) -> dict:
        """Where the id_only model's user table is placed, and how it is computed."""
        return table_placements(self.build(self.cfg(*sets, preset="id_only")).plan)["table_user"]

    def dense_groups(self, *sets: str) -> dict[str, dict]:
        """The dense optimizer's parameter groups, by name."""
        cfg = self.cfg(*sets)
        optimizer = build_optimizer(self.build(cfg), cfg)
        return {g["name"]: g for g in optimizer.param_groups if g.get("name")}

    def lora_history(self, *sets: str, train: bool = False, seed: int = 0) -> torch.Tensor:
        """History content with every LoRA B matrix set to 0.1 (they start at zero, where
        the adapters do not change the output yet)."""
        def build() -> torch.nn.Module:
            model = self.build(self.cfg(*sets))
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if "lora_B" in name:
                        p.fill_(0.1)
            return model

        model = self.memo(("lora", *sets), build)
        return self.forward(*sets, model=model, train=train, seed=seed).out.hist_content

    def qformer_rows(self, *sets: str) -> tuple[int, int]:
        """Item rows through the Q-Former in a training forward, and in the backward after
        it (recomputed checkpoints)."""
        def run() -> tuple[int, int]:
            cfg = self.cfg(*sets)
            model = self.build(cfg)
            rows = [0]
            inner(model).content.qformer.register_forward_pre_hook(
                lambda module, args: rows.__setitem__(0, rows[0] + args[0].shape[0]))
            batch = self.batch(cfg)
            model.train()
            out = model(batch)
            forward = rows[0]
            inner(model).loss(out, batch)[0].backward()
            return forward, rows[0] - forward

        return self.memo(("qformer_rows", *sets), run)

    def shards(self) -> Path:
        """The lab's world as prepared shards, prepared with the id_only preset's settings."""
        def make() -> Path:
            out = self.root / "shards"
            write_shards(self.prepared(self.cfg(preset="id_only")), out, buckets=4)
            return out
        return self.memo(("shards",), make)

    def shard_order(self, *sets: str) -> np.ndarray:
        """Where the rows of epoch 0 that ``recsys train id_only --data SHARDS`` streams stand
        in the train split (positions in split order), in the order they come."""
        def run() -> np.ndarray:
            cfg = self.cfg(*sets, preset="id_only", world=self.shards())
            loader = open_train_data(cfg).train_loader(cfg, self.env)
            streamed = np.concatenate([b.row_id.numpy() for b in loader])
            split_ids = load_prepared(self.shards(), ("train",)).frame["row_id"].to_numpy()
            by_id = np.argsort(split_ids)
            return by_id[np.searchsorted(split_ids, streamed, sorter=by_id)]
        return self.memo(("shard_order", *sets), run)

    # ---- what recsys train does ----------------------------------------------------------

    def trainer(self, *sets: str, preset: str = "id_only", world: Path | None = None) -> Trainer:
        return Trainer(self.cfg(*sets, preset=preset, world=world), self.run_dir(), self.env,
                       progress=False)

    def loop(self, *sets: str) -> dict:
        """An id_only Trainer with ``sets``: what it builds, one ``run_epoch`` (or, without
        sets, one ``train_step``), one ``validate``."""
        def run() -> dict:
            compiled: list = []
            with spy_compile(compiled):
                trainer = self.trainer(*sets)
            seen = {"compiled": len(compiled), "threads": torch.get_num_threads(),
                    "valid_rows": count(trainer.prepared, "valid"),
                    "loader": len(trainer.loader), "steps_per_epoch": trainer.steps_per_epoch,
                    "first": next(iter(trainer.loader)),  # and the ranking tower's initial weights:
                    "init": torch.cat([p.detach().flatten() for n, p in inner(
                        trainer.model).named_parameters() if n.startswith("ranking.over_arch.")])}
            torch.set_num_threads(1)
            sizes: list[int] = []
            trainer.model.register_forward_pre_hook(lambda module, args: sizes.append(args[0].size))
            if sets:
                trainer.run_epoch()
            else:
                trainer.train_step(seen["first"])
            grads = [p.grad.norm() for p in trainer.model.parameters() if p.grad is not None]
            seen["grad_norm"] = float(torch.linalg.vector_norm(torch.stack(grads)))
            seen["train_sizes"], sizes[:] = list(sizes), []
            seen["step"] = trainer.state.step
            seen["checkpoints"] = sorted(int(p.name.split("_")[1])
                                         for p in (trainer.run_dir / "checkpoints").glob("step_*"))
            trainer.validate()
            seen["eval_sizes"] = sizes
            return seen

        return self.memo(("loop", *sets), run)

    def scripted_fit(self, *sets: str) -> TrainState:
        """``fit`` over 4 epochs of one id_only step each, with validation results scripted:
        AUC best at epochs 1 and 4, logloss falling every epoch."""
        def run() -> TrainState:
            trainer = self.trainer("train.epochs=4", "train.max_steps_per_epoch=1", *sets)
            results = iter([(0.7, 0.5), (0.6, 0.4), (0.65, 0.3), (0.8, 0.2)])

            def validate():
                auc, logloss = next(results)
                return {"labels": {"click": {"auc": auc, "gauc": auc, "logloss": logloss}}}, 0.0

            trainer.validate = validate
            trainer.fit()
            return trainer.state

        return self.memo(("fit", *sets), run)

    def cli_run(self) -> dict:
        """``recsys train id_only`` on the other world with data.dir and name set and
        tracking off, without --out, in an empty working directory: its run.json and what
        the working directory holds."""
        def run() -> dict:
            from recsys.cli import main

            cwd = self.root / "cli"
            cwd.mkdir()
            sets = [f'data.dir="{self.other}"', "data.allow_missing_media=true",
                    'name="probe-name"', "tracking.enabled=false", "train.epochs=1",
                    "train.max_steps_per_epoch=1", 'train.compile="off"']
            with contextlib.chdir(cwd):
                assert main(["train", "id_only", "--quiet",
                             *[a for s in sets for a in ("--set", s)]]) == 0
            (run,) = (cwd / "runs").iterdir()
            return {"run": run, "meta": json.loads((run / "run.json").read_text()),
                    "files": sorted(p.name for p in cwd.iterdir())}

        return self.memo(("cli",), run)

    def tracked_run(self) -> tuple[dict, str]:
        """An id_only run tracked into a fresh SQLite store with a model name: its run.json
        and the store's URI."""
        def run() -> tuple[dict, str]:
            uri = fresh_store(self.root / "tracked", self.basetemp)
            cfg = self.cfg("tracking.enabled=true", f'tracking.uri="{uri}"',
                           'tracking.model_name="probe-ranker"', "train.epochs=1",
                           "train.max_steps_per_epoch=1", preset="id_only")
            out = self.run_dir("tracked")
            train(cfg, out, progress=False)
            return json.loads((out / "run.json").read_text()), uri

        return self.memo(("tracked",), run)

