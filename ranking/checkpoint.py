"""Distributed checkpoints with ``torch.distributed.checkpoint`` (DCP).

A run directory holds one folder per saved step::

    run_dir/step_000000120/   .metadata  __0_0.distcp  __1_0.distcp  meta.json
                              extra_state.json  [extra_tensors.pt]

Every rank writes its own shards; ``.metadata`` records the global layout, so a checkpoint
written by N processes loads into M processes (or into a plain, unsharded model for
evaluation): DCP reads whatever slices each rank's current tensors need. Model and optimizer
state are keyed by parameter name (``KeyedOptimizer``), which is what makes resharding work.

Saves are atomic: everything goes to ``.tmp-step_…`` and rank 0 renames it into place after
all ranks finished writing, so ``latest_checkpoint`` never returns a half-written folder.

Nothing is loaded through a pickle that could run code (docs/threat_model.md): the extra state
is JSON, with its tensors (an RNG state) in a file read with ``torch.load(weights_only=True)``,
and DCP's own files go through ``ranking.safe_dcp``. A checkpoint of the earlier format, whose
extra state was a pickle (``extra_state.pt``), is refused with the command that converts it
(``python -m ranking.checkpoint_convert``).
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint import CheckpointException

from ranking.checkpoint_errors import CheckpointLoadError, UnsafeCheckpointError
from ranking.optim import init_optimizer_state
from ranking.safe_dcp import SafeLoadPlanner, SafeReader, read_metadata

_STEP_DIR = re.compile(r"^step_(\d+)$")
META_FILE = "meta.json"
EXTRA_FILE = "extra_state.json"
TENSORS_FILE = "extra_tensors.pt"
LEGACY_EXTRA_FILE = "extra_state.pt"  # the earlier format: a pickle, never loaded
_TENSOR = "__tensor__"  # {"__tensor__": "3"} in extra_state.json stands for tensor "3"


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def _barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def step_dir(run_dir: str | os.PathLike, step: int) -> Path:
    """Folder of the checkpoint of ``step`` inside ``run_dir``."""
    return Path(run_dir) / f"step_{step:09d}"


def is_complete(path: str | os.PathLike) -> bool:
    """A checkpoint folder that was fully written (DCP metadata and our meta file)."""
    p = Path(path)
    return (p / ".metadata").is_file() and (p / META_FILE).is_file()


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The complete checkpoint with the highest step in ``run_dir``, or None."""
    root = Path(run_dir)
    if not root.is_dir():
        return None
    best: tuple[int, Path] | None = None
    for child in root.iterdir():
        m = _STEP_DIR.match(child.name)
        if m and child.is_dir() and is_complete(child):
            step = int(m.group(1))
            if best is None or step > best[0]:
                best = (step, child)
    return None if best is None else best[1]


def save_checkpoint(run_dir: str | os.PathLike, model: nn.Module,
                    optimizer: torch.optim.Optimizer | None = None,
                    extra_state: dict[str, Any] | None = None, step: int = 0,
                    keep_last: int | None = None) -> Path:
    """Saves model (+ optimizer) state collectively; every rank must call it.

    Args:
        run_dir: the run's checkpoint folder (created if needed, shared by all ranks).
        model: plain or DMP-wrapped model; sharded tables are written shard by shard.
        optimizer: a ``KeyedOptimizer`` (e.g. from ``make_optimizers``) or None.
        extra_state: JSON values (dicts with string keys, lists, strings, numbers, booleans,
            None) and tensors: data position, early-stopping state, RNG states. Rank 0's copy
            is saved; tuples come back as lists.
        step: the training step; names the folder.
        keep_last: keep only this many newest checkpoints (None = keep all).

    Returns:
        The final checkpoint folder ``run_dir/step_<step>``.
    """
    run_dir = Path(run_dir)
    extra_json, extra_tensors = encode_extra(dict(extra_state or {}))  # refused before any write
    final = step_dir(run_dir, step)
    tmp = run_dir / f".tmp-{final.name}"
    if _rank() == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)  # a crash left it behind
        tmp.mkdir()
    _barrier()
    state: dict[str, Any] = {"model": model.state_dict()}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    dcp.save(state, checkpoint_id=tmp)
    if _rank() == 0:
        # dcp.save returns on the coordinator only after every rank's files are written.
        (tmp / EXTRA_FILE).write_text(extra_json)
        if extra_tensors:
            torch.save(extra_tensors, tmp / TENSORS_FILE)
        meta = {"step": int(step), "world_size": _world_size(), "time": time.time(),
                "has_optimizer": optimizer is not None}
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        if final.exists():
            # Re-saving a step: move the old one aside first, since a directory rename
            # cannot replace a non-empty directory.
            old = run_dir / f".old-{final.name}"
            shutil.rmtree(old, ignore_errors=True)
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(final)
        if keep_last is not None:
            _prune(run_dir, keep_last)
    _barrier()
    return final


def _prune(run_dir: Path, keep_last: int) -> None:
    # Only complete checkpoints count: a stray incomplete folder must not push a good one out.
    steps = sorted((int(m.group(1)), p) for p in run_dir.iterdir()
                   if (m := _STEP_DIR.match(p.name)) and p.is_dir() and is_complete(p))
    for _, path in steps[:max(len(steps) - keep_last, 0)]:
        shutil.rmtree(path, ignore_errors=True)


def load_checkpoint(path: str | os.PathLike, model: nn.Module,
                    optimizer: torch.optim.Optimizer | None = None,
                    strict: bool = True) -> dict[str, Any]:
    """Loads a checkpoint in place, resharding to the current world; every rank must call it.

    Args:
        path: a checkpoint folder, or a run folder (its latest checkpoint is used).
        model: plain or DMP-wrapped model with the same parameter names as when saved.
        optimizer: the ``KeyedOptimizer`` to restore (None: model only, e.g. evaluation).
        strict: every key of the current model/optimizer must be in the checkpoint.

    Returns:
        The saved ``extra_state``, plus ``step`` when it has no such key.
    """
    path = Path(path)
    if not is_complete(path):
        latest = latest_checkpoint(path)
        if latest is None:
            raise FileNotFoundError(f"no complete checkpoint at {path}")
        path = latest
    # Everything that could refuse the checkpoint is read before a weight is touched.
    meta = _read_meta(path)
    extra = read_extra(path)
    metadata = read_metadata(path)
    if optimizer is not None and not meta["has_optimizer"]:
        raise ValueError(f"{path} holds no optimizer state")
    if optimizer is not None:
        # Lazy state (Adam moments) must exist before it can be loaded in place; this runs
        # before the model weights are loaded so the dummy step cannot disturb them.
        init_optimizer_state(optimizer)
    state: dict[str, Any] = {"model": model.state_dict()}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    try:
        dcp.load(state, storage_reader=SafeReader(path, metadata),
                 planner=SafeLoadPlanner(allow_partial_load=not strict))
    except CheckpointException as e:
        # DCP raises a BaseException (it escapes ``except Exception``) holding every rank's
        # error; surface the first one as an ordinary error that names the checkpoint.
        rank, (first, _) = next(iter(sorted(e.failures.items(), key=lambda kv: kv[0])))
        kind = type(first) if isinstance(first, CheckpointLoadError) else CheckpointLoadError
        raise kind(f"cannot load {path} (rank {rank}): {first}") from e
    model.load_state_dict(state["model"], strict=strict)
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    extra.setdefault("step", meta["step"])
    return extra


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
        if isinstance(meta.get("step"), int) and isinstance(meta.get("has_optimizer"), bool):
            return meta
    except (OSError, ValueError, AttributeError):
        pass
    raise CheckpointLoadError(f"{path / META_FILE}: not a checkpoint's meta.json "
                              "(needs an integer 'step' and a boolean 'has_optimizer')")


def encode_extra(extra: dict[str, Any]) -> tuple[str, dict[str, torch.Tensor]]:
    """``extra`` as the text of ``extra_state.json`` and its tensors by key.

    Raises:
        TypeError: a value that is neither a JSON value nor a tensor (a numpy array, a set, an
            object), named by its path in ``extra``.
    """
    tensors: dict[str, torch.Tensor] = {}

    def encode(value: Any, where: str) -> Any:
        if isinstance(value, torch.Tensor):
            key = str(len(tensors))
            tensors[key] = value.detach().cpu().clone()
            return {_TENSOR: key}
        if isinstance(value, dict):
            if _TENSOR in value or not all(isinstance(k, str) for k in value):
                raise TypeError(f"extra_state{where}: keys must be strings other than {_TENSOR!r}")
            return {k: encode(v, f"{where}.{k}") for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if value is None or isinstance(value, bool | int | float | str):
            return value
        raise TypeError(f"extra_state{where}: a {type(value).__name__} is not saved; a checkpoint "
                        "holds JSON values and tensors only")

    return json.dumps(encode(extra, "")) + "\n", tensors


def read_extra(path: str | os.PathLike) -> dict[str, Any]:
    """The ``extra_state`` saved in checkpoint folder ``path`` (JSON, tensors restored).

    Raises:
        UnsafeCheckpointError: the folder holds the earlier pickled ``extra_state.pt``, or a
            tensor file that needs more than tensors to load.
        CheckpointLoadError: the files are missing or malformed.
    """
    path = Path(path)
    if not (path / EXTRA_FILE).is_file():
        if (path / LEGACY_EXTRA_FILE).exists():
            raise UnsafeCheckpointError(
                f"{path}: refused, this checkpoint keeps its state in {LEGACY_EXTRA_FILE}, a "
                "pickle (the format before checkpoints held JSON), and a pickle can run code "
                "when loaded. If you trust where the run came from, convert it once with "
                f"`python -m ranking.checkpoint_convert {path.parent}`; otherwise train it again")
        raise CheckpointLoadError(f"{path}: no {EXTRA_FILE}")
    try:
        extra = json.loads((path / EXTRA_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CheckpointLoadError(f"{path / EXTRA_FILE}: unreadable ({err})") from None
    if not isinstance(extra, dict):
        raise CheckpointLoadError(f"{path / EXTRA_FILE}: must hold a JSON object")
    tensors: dict[str, Any] = {}
    if (path / TENSORS_FILE).exists():
        try:
            tensors = torch.load(path / TENSORS_FILE, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            raise UnsafeCheckpointError(f"{path / TENSORS_FILE}: refused, it needs Python objects "
                                        "beyond tensors to load (a pickle that could run "
                                        "code)") from None
        except Exception as err:  # truncated or garbage bytes raise many types
            raise CheckpointLoadError(f"{path / TENSORS_FILE}: unreadable ({err})") from None
        if not isinstance(tensors, dict):
            raise CheckpointLoadError(f"{path / TENSORS_FILE}: must hold a dict of tensors")

    def decode(value: Any) -> Any:
        if isinstance(value, dict):
            if set(value) == {_TENSOR}:
                tensor = tensors.get(value[_TENSOR])
                if not isinstance(tensor, torch.Tensor):
                    raise CheckpointLoadError(f"{path / EXTRA_FILE}: names tensor "
                                              f"{value[_TENSOR]!r}, which {TENSORS_FILE} lacks")
                return tensor
            return {k: decode(v) for k, v in value.items()}
        if isinstance(value, list):
            return [decode(v) for v in value]
        return value

    return decode(extra)
