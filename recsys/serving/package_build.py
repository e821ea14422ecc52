"""Writing the serving package of a trained run (the layout is in ``recsys.serving.package``).

The weights: the run's best checkpoint is loaded into a world-of-one model by
``recsys.model.build.build_model`` and saved again by ``ranking.checkpoint.save_checkpoint`` without
optimizer state. The served model then loads them through the same ``build_model(checkpoint=)``
as ``recsys evaluate``, whatever world the run trained in (docs/serving.md, "Weights").
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from data.dataset import dataset_fingerprint, load_dataset
from data.spec import spec_to_toml
from multimodal.content import HasTokens
from ranking.checkpoint import META_FILE as CHECKPOINT_META
from ranking.checkpoint import save_checkpoint
from recsys.config import TrainConfig, load_run_config
from recsys.errors import UsageError
from recsys.model.build import best_checkpoint, build_model, em3_of
from recsys.model.content_setup import load_item_tokens
from recsys.runs import rundir
from recsys.runs.run_artifacts import DATA_STATE, load_data_state
from recsys.serving import package as pkg
from recsys.serving import snapshot
from recsys.serving.schema import RequestSchema
from recsys.serving.world import world_of_one


def run_dataset(run_dir: Path, data_dir: str | Path | None = None) -> Path:
    """The dataset a run was trained on: ``data_dir``, else the one ``run.json`` names; its
    fingerprint must be the run's (the vocabularies and the snapshot describe that data).

    Raises:
        UsageError: no dataset is named, it is gone, or it changed since training.
    """
    dataset = (rundir.read_meta(run_dir).get("dataset") or {})
    named = data_dir or dataset.get("dir")
    if not named or not (Path(named) / "dataset.toml").is_file():
        raise UsageError(f"{run_dir}: its dataset {named or '(none recorded)'} is not there; "
                         "pass the directory the run was trained on")
    path = Path(named)
    found, want = dataset_fingerprint(path), dataset.get("fingerprint")
    if want and found != want:
        raise UsageError(f"{path} is not the data {run_dir} was trained on (fingerprint {found}, "
                         f"run {want}); the served model's state and catalogue must be its own")
    return path


def build_package(run_dir: str | Path, out: str | Path, data_dir: str | Path | None = None,
                  progress: bool = False) -> Path:
    """Writes the serving package of ``run_dir`` into ``out`` (created; must not exist).

    Raises:
        UsageError: not a training run, no checkpoint, or its dataset is not available.
    """
    run_dir, out = Path(run_dir), Path(out)
    if not (run_dir / rundir.CONFIG_FILE).is_file() or not (run_dir / DATA_STATE).is_file():
        raise UsageError(f"{run_dir}: not a training run directory (needs {rundir.CONFIG_FILE} "
                         f"and {DATA_STATE})")
    checkpoint = best_checkpoint(run_dir)
    if checkpoint is None:
        raise UsageError(f"{run_dir}: no complete checkpoint to serve")
    cfg = load_run_config(run_dir / rundir.CONFIG_FILE)
    layout, _, prep = load_data_state(run_dir)
    dataset = load_dataset(run_dataset(run_dir, data_dir),
                           allow_missing_media=cfg.data.allow_missing_media)
    schema = RequestSchema.from_spec(dataset.spec,
                                     dataset.interactions.schema["user_id"].is_integer(),
                                     dataset.items.schema["item_id"].is_integer(),
                                     layout.max_history)
    out.mkdir(parents=True)
    with world_of_one() as env:
        tokens = load_item_tokens(cfg, dataset, env, progress=progress) if cfg.content.enabled else None
        model = build_model(cfg, layout, tokens, env, checkpoint)
        heads = em3_of(model).ranking.head_names
        step = int(json.loads((checkpoint / CHECKPOINT_META).read_text())["step"])
        save_checkpoint(out / pkg.WEIGHTS, model, None, {"source": str(checkpoint)}, step)
    if tokens is not None:
        _save_tokens(tokens, out / pkg.TOKENS)
    snapshot.item_state(dataset).write_parquet(out / pkg.ITEMS)
    snapshot.user_state(dataset, layout.max_history).write_parquet(out / pkg.USERS)
    shutil.copyfile(run_dir / rundir.CONFIG_FILE, out / pkg.CONFIG)
    shutil.copyfile(run_dir / DATA_STATE, out / DATA_STATE)
    (out / pkg.SPEC).write_text(spec_to_toml(dataset.spec), encoding="utf-8")
    meta = rundir.read_meta(run_dir)
    info = {"format": pkg.FORMAT, "run": meta.get("name") or run_dir.name,
            "preset": meta.get("preset"), "run_dir": str(run_dir.resolve()),
            "checkpoint": {"path": str(checkpoint.resolve()), "step": step},
            "dataset_fingerprint": dataset.fingerprint, "dataset_dir": str(dataset.root),
            "snapshot_ts": snapshot.snapshot_time(dataset), "heads": list(heads),
            "catalogue_items": dataset.items.height, "content": _content(cfg),
            "request": schema.to_dict(), "created_at": rundir.utc_now()}
    (out / pkg.INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return out


def _content(cfg: TrainConfig) -> dict | None:
    c = cfg.content
    return {"vision": c.vision, "text": c.text, "tokens": c.tokens} if c.enabled else None


def _save_tokens(tokens: HasTokens, path: Path) -> None:
    """The token table (N x T x D features in their stored dtype, N x T bool masks) as
    safetensors: plain tensors, no pickle."""
    from safetensors.torch import save_file

    save_file({k: torch.as_tensor(getattr(tokens, k)).contiguous().cpu()
               for k in pkg.TOKEN_TENSORS}, str(path))

