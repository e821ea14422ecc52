"""EM3 training: one readable loop that runs the same in one process and under ``torchrun``.

Order of things: data → token features → model (ranking tables on ``meta``) → DMP sharding →
optimizers (fused sparse in backward; AdamW with its own learning rate per dense group) →
epochs of steps with checkpoints → validation + early stopping → test scoring with the best
weights → ``metrics.json`` → MLflow. A killed run continues from its last checkpoint with
``resume=True`` and ends where an uninterrupted run would have ended (CPU, same seed).
"""

from __future__ import annotations

import json
import random
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from ranking.checkpoint import (
    CheckpointLoadError,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from ranking.dist import DistEnv, process_group
from recsys.config import TrainConfig, load_run_config, resume_differences, train_config_toml
from recsys.errors import UsageError
from recsys.evaluation.metrics import compute_metrics
from recsys.evaluation.predict import predictions_frame
from recsys.model.build import BEST, apply_threads, autocast, build_model, em3_of
from recsys.model.content_setup import load_item_tokens
from recsys.model.em3 import EM3Model
from recsys.runs import rundir
from recsys.runs.run_artifacts import save_data_state
from recsys.runs.rundir import CHECKPOINTS_DIR
from recsys.training.optim import build_optimizer, clip_dense_gradients
from recsys.training.perf import count_flops, keep_freed_memory, mfu, peak_flops, use_compile
from recsys.training.train_data import open_train_data, resume_source_difference


@dataclass
class TrainState:
    """Where training stands; saved in every checkpoint so a resumed run continues exactly."""

    epoch: int = 0
    batch_in_epoch: int = 0
    step: int = 0
    best: float | None = None
    best_epoch: int = -1
    bad_epochs: int = 0
    stopped_early: bool = False
    train_samples_per_s: float = 0.0
    flops_per_sample: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    """The RNG states as JSON lists and a tensor: a checkpoint holds no pickles
    (docs/threat_model.md)."""
    version, keys, gauss = random.getstate()
    name, np_keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": [version, list(keys), gauss],
            "numpy": [name, np_keys.tolist(), int(pos), int(has_gauss), float(cached)],
            "torch": torch.get_rng_state()}


def _set_rng_state(s: dict[str, Any]) -> None:
    version, keys, gauss = s["python"]
    random.setstate((version, tuple(keys), gauss))
    name, np_keys, pos, has_gauss, cached = s["numpy"]
    np.random.set_state((name, np.asarray(np_keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(s["torch"])


def _score(metrics: dict[str, Any], label: str, name: str) -> float | None:
    """The early-stopping score of a validation result (higher is better)."""
    value = metrics["labels"][label].get(name)
    return None if value is None else (-value if name == "logloss" else value)


class Trainer:
    """Holds the model, optimizer, data and state of one training run."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, env: DistEnv, progress: bool = True) -> None:
        self.cfg, self.run_dir, self.env = cfg, run_dir, env
        self.progress = progress and env.is_main
        apply_threads(cfg)
        if env.device.type == "cpu":
            keep_freed_memory()
        seed_everything(cfg.train.seed)
        # A dataset directory (prepared here) or prepared shards (train streamed).
        self.data = open_train_data(cfg)
        self.dataset, self.prepared = self.data.dataset, self.data.prepared
        self.label = self.prepared.layout.labels[0]
        tokens = load_item_tokens(cfg, self.dataset, env, progress=self.progress) \
            if cfg.content.enabled else None
        seed_everything(cfg.train.seed)
        self.model = build_model(cfg, self.prepared.layout, tokens, env, print_plan=self.progress)
        try:
            compiled, why = use_compile(cfg.train.compile, env.device)
        except ValueError as err:
            raise UsageError(str(err)) from err
        if compiled:
            self.em3.ranking.compile_dense_tower()
        if self.progress:
            print(why, flush=True)
            print(f"dense tower precision: {self.dense_precision} (ranking.cpu_precision = "
                  f"\"{self.em3.ranking.config.cpu_precision}\")", flush=True)
        self.optimizer = build_optimizer(self.model, cfg)
        self.loader = self.data.train_loader(cfg, env)
        self.state = TrainState()
        # MFU is read against the peak of the precision the step's matmuls use: bf16 where the
        # dense tower or the Q-Former runs under CPU bf16 autocast (the lower reading).
        bf16 = self.em3.ranking.config.cpu_bf16 or (cfg.content.enabled and cfg.content.cpu_bf16)
        self.peak = peak_flops(env.device, torch.bfloat16 if bf16 else torch.float32)
        self.interest_warmup_steps = round(cfg.interest.warmup_epochs * self.steps_per_epoch) \
            if cfg.uses_interest else 0
        if self.progress and self.interest_warmup_steps:
            print(f"interest loss: weight {cfg.interest.weight:g}, ramped in linearly over the "
                  f"first {self.interest_warmup_steps} steps (interest.warmup_epochs = "
                  f"{cfg.interest.warmup_epochs:g})", flush=True)

    @property
    def steps_per_epoch(self) -> int:
        limit = self.cfg.train.max_steps_per_epoch
        return len(self.loader) if limit == 0 else min(len(self.loader), limit)

    def interest_scale(self, step: int) -> float:
        """The interest loss's warm-up factor for 0-based training step ``step``: (step + 1) /
        warm-up steps, capped at 1. A function of the step alone, so a resumed run continues
        the same ramp."""
        if self.interest_warmup_steps == 0:
            return 1.0
        return min(1.0, (step + 1) / self.interest_warmup_steps)

    @property
    def em3(self) -> EM3Model:
        """The module inside the wrapped ``model`` (its ranking model and parameter groups)."""
        return em3_of(self.model)

    @property
    def dense_precision(self) -> str:
        """What the ranking model's dense tower computes in: on a GPU the whole forward pass
        runs under bf16 autocast; on CPU ``ranking.cpu_precision`` decides."""
        if self.env.device.type == "cuda":
            return "bf16 autocast (GPU)"
        return "bf16 autocast (CPU)" if self.em3.ranking.config.cpu_bf16 else "float32"

    # ---- checkpoints -------------------------------------------------------------------------
    def save(self) -> None:
        extra = {"state": asdict(self.state), "rng": _rng_state()}
        save_checkpoint(self.run_dir / CHECKPOINTS_DIR, self.model, self.optimizer, extra,
                        step=self.state.step, keep_last=2)

    def restore(self) -> bool:
        path = latest_checkpoint(self.run_dir / CHECKPOINTS_DIR)
        if path is None:
            return False
        extra = load_checkpoint(path, self.model, self.optimizer)
        try:
            self.state = TrainState(**extra["state"])
            _set_rng_state(extra["rng"])
        except (KeyError, TypeError, ValueError) as err:  # a checkpoint someone else wrote
            raise CheckpointLoadError(f"{path}: not the training state of a run "
                                      f"({type(err).__name__}: {err})") from None
        if self.env.is_main:
            # history.jsonl may hold epochs finished after this checkpoint: the state's copy
            # is the truth, and those epochs will be trained again.
            text = "".join(json.dumps(r, allow_nan=False) + "\n" for r in self.state.history)
            rundir.atomic_write_text(self.run_dir / rundir.HISTORY_FILE, text)
            print(f"resumed from {path.name}: epoch {self.state.epoch}, "
                  f"batch {self.state.batch_in_epoch}, step {self.state.step}", flush=True)
        return True

    # ---- the loop ----------------------------------------------------------------------------
    def train_step(self, batch) -> dict[str, float]:
        with autocast(self.env.device):
            out = self.model(batch, with_loss=True,
                             interest_scale=self.interest_scale(self.state.step))
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        if self.cfg.optim.grad_clip > 0:
            clip_dense_gradients(self.optimizer, self.cfg.optim.grad_clip)
        self.optimizer.step()
        return out.loss_parts

    def run_epoch(self) -> tuple[dict[str, float], float]:
        """Trains the rest of the current epoch; returns (mean of each loss part, global
        samples/s). The parts are the total ``loss``, ``bce_<head>`` and ``cic``."""
        st, cfg = self.state, self.cfg
        self.loader.set_epoch(st.epoch)
        self.model.train()
        limit = self.steps_per_epoch
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=limit, initial=st.batch_in_epoch, desc=f"epoch {st.epoch + 1}/"
                       f"{cfg.train.epochs}", unit="batch", mininterval=1.0, leave=False)
        sums: dict[str, float] = {}
        steps, samples, start = 0, 0, time.perf_counter()
        # A resumed run starts at the batch it was interrupted before, without building the
        # batches it already trained on.
        first = min(st.batch_in_epoch, limit)
        for i, batch in enumerate(self.loader.iter_from(first), start=first):
            if i >= limit:
                break
            batch = batch.to(self.env.device)
            parts: dict[str, float] = {}
            if st.flops_per_sample == 0.0:  # first step: also count its FLOPs (for MFU)
                flops = count_flops(lambda b=batch, out=parts: out.update(self.train_step(b)))
                st.flops_per_sample = flops / batch.size
            else:
                parts = self.train_step(batch)
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v
            steps += 1
            samples += batch.size * self.env.world_size
            st.batch_in_epoch, st.step = i + 1, st.step + 1
            if bar is not None:
                rate = samples / max(time.perf_counter() - start, 1e-9)
                bar.set_postfix(loss=f"{parts['loss']:.4f}", samples_s=f"{rate:,.0f}", refresh=False)
                bar.update(1)
            if cfg.train.checkpoint_every and st.step % cfg.train.checkpoint_every == 0:
                self.save()
        if bar is not None:
            bar.close()
        elapsed = time.perf_counter() - start
        return {k: v / steps for k, v in sums.items()}, samples / max(elapsed, 1e-9)

    def validate(self) -> tuple[dict[str, Any] | None, float]:
        probs, rate = self.data.score(self.model, "valid", self.cfg.train.eval_batch_size, self.env)
        if probs is None:
            return None, rate
        return compute_metrics(predictions_frame(self.data.split_data("valid"), "valid", probs),
                               list(self.prepared.layout.labels), "valid"), rate

    def fit(self) -> None:
        st, cfg = self.state, self.cfg
        while st.epoch < cfg.train.epochs and not st.stopped_early:
            parts, rate = self.run_epoch()
            loss = parts.get("loss", float("nan"))
            st.train_samples_per_s = rate
            metrics, _ = self.validate()
            score = None
            if self.env.is_main:
                score = _score(metrics, self.label, cfg.train.early_stop_metric)
            score = _broadcast(score, self.env)
            improved = score is not None and (st.best is None or score > st.best)
            record = {"epoch": st.epoch + 1, "step": st.step, "train_loss": loss,
                      "train_parts": parts, "samples_per_s": rate, "mfu": mfu(st.flops_per_sample, rate, self.peak),
                      "valid": metrics, "time": rundir.utc_now("milliseconds")}
            st.history.append(record)
            if improved:
                st.best, st.best_epoch, st.bad_epochs = score, st.epoch, 0
            else:
                st.bad_epochs += 1
                st.stopped_early = st.bad_epochs > cfg.train.patience
            st.epoch, st.batch_in_epoch = st.epoch + 1, 0
            if improved:
                save_checkpoint(self.run_dir / CHECKPOINTS_DIR / BEST, self.model, None,
                                {"epoch": st.epoch}, step=st.step, keep_last=1)
            self.save()
            if self.env.is_main:
                rundir.append_history(self.run_dir, record)
                value = metrics["labels"][self.label].get(cfg.train.early_stop_metric)
                print(f"epoch {st.epoch}: loss {loss:.4f}, {rate:,.0f} samples/s, valid "
                      f"{self.label} {cfg.train.early_stop_metric} {value}"
                      f"{' (best)' if improved else ''}", flush=True)

    def test(self) -> dict[str, Any] | None:
        """Scores the test split with the best weights; writes predictions and metrics.json."""
        best = latest_checkpoint(self.run_dir / CHECKPOINTS_DIR / BEST)
        if best is not None:
            load_checkpoint(best, self.model)
        probs, eval_rate = self.data.score(self.model, "test", self.cfg.train.eval_batch_size,
                                           self.env)
        if probs is None:
            return None
        frame = predictions_frame(self.data.split_data("test"), "test", probs)
        st = self.state
        throughput = {"train_samples_per_s": st.train_samples_per_s,
                      "eval_samples_per_s": eval_rate * self.env.world_size,
                      "flops_per_sample": st.flops_per_sample,
                      "mfu": mfu(st.flops_per_sample, st.train_samples_per_s, self.peak)}
        metrics = compute_metrics(frame, list(self.prepared.layout.labels), "test", throughput)
        metrics["best_epoch"] = st.best_epoch + 1
        rundir.write_predictions(self.run_dir, "test", frame, list(self.prepared.layout.labels))
        rundir.write_metrics(self.run_dir, metrics)
        return metrics


def _broadcast(value: Any, env: DistEnv) -> Any:
    if env.world_size == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def train(cfg: TrainConfig, run_dir: str | Path, resume: bool = False, preset: str | None = None,
          progress: bool = True) -> dict[str, Any] | None:
    """Trains ``cfg`` into ``run_dir``; returns the test metrics on rank 0 (None elsewhere)."""
    if not cfg.data.dir:
        raise UsageError("no dataset: pass --data DIR or set data.dir in the config")
    run_dir = Path(run_dir)
    # Every rank leaves the group together before rank 0 tracks the run (which may take a
    # while, or wait on an unreachable store).
    with process_group() as env:
        metrics = _train_and_test(cfg, run_dir, env, resume, preset, progress)
    if env.is_main and cfg.tracking.enabled:
        from recsys.runs.tracking import track_run

        with warnings.catch_warnings():
            warnings.simplefilter("default")
            track_run(run_dir, tracking_uri=cfg.tracking.uri or None,
                      model_name=cfg.tracking.model_name)
    return metrics


def _train_and_test(cfg: TrainConfig, run_dir: Path, env: DistEnv, resume: bool,
                    preset: str | None, progress: bool) -> dict[str, Any] | None:
    exists = (run_dir / rundir.META_FILE).is_file()
    if exists and not resume:
        raise UsageError(f"{run_dir} already holds a run; pass --resume to continue it or "
                         "choose another --out")
    if resume and not exists:
        raise UsageError(f"--resume: {run_dir} holds no run to continue")
    if resume and rundir.read_meta(run_dir).get("status") == "finished":
        raise UsageError(f"--resume: the run in {run_dir} has already finished")
    if resume:
        changed = resume_differences(load_run_config(run_dir / rundir.CONFIG_FILE), cfg)
        if changed:
            raise UsageError(f"--resume: {run_dir / rundir.CONFIG_FILE} was trained with other "
                             f"settings than given ({'; '.join(changed)}); resume with the run's "
                             "settings (--set them) or train into another --out")
        other_source = resume_source_difference(rundir.read_meta(run_dir), cfg.data.dir)
        if other_source:
            raise UsageError(other_source)
    trainer = Trainer(cfg, run_dir, env, progress)
    if env.is_main and not exists:
        rundir.init_run(run_dir, config_toml=train_config_toml(cfg), kind="train", preset=preset,
                        model_name=cfg.tracking.model_name, labels=list(trainer.prepared.layout.labels),
                        dataset_dir=trainer.data.source_dir, dataset_fingerprint=trainer.dataset.fingerprint)
        if trainer.data.shards is not None:
            rundir.update_meta(run_dir, prepared_shards=str(trainer.data.shards.root))
        save_data_state(run_dir, trainer.prepared)
    if env.is_main:  # this machine's choice (``cpu_precision = "auto"`` depends on the CPU)
        rundir.update_meta(run_dir, dense_tower_precision=trainer.dense_precision)
    _broadcast(None, env)  # the run dir exists before any rank writes checkpoints into it
    if resume:
        trainer.restore()
    try:
        trainer.fit()
        metrics = trainer.test()
    except BaseException:
        if env.is_main:
            rundir.update_meta(run_dir, status="failed")
        raise
    if env.is_main:
        rundir.finish_run(run_dir)
    return metrics
