"""The one place that builds a trainable or servable EM3 model from a config, a feature layout,
the item tokens and (optionally) a checkpoint: ``recsys train``, ``recsys evaluate`` and
serving (``recsys.serving``) all come through here, so a model is never assembled two ways.

Also the run-directory names of the checkpoints and the process settings that training and
evaluation must share to score rows identically (threads, autocast).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torchrec.distributed.model_parallel import DistributedModelParallel

from data.batch import FeatureLayout
from multimodal.content import HasTokens
from ranking.checkpoint import latest_checkpoint, load_checkpoint
from ranking.config import ConfigError
from ranking.dist import DistEnv
from ranking.sharding import shard_model
from recsys.config import TrainConfig
from recsys.errors import UsageError
from recsys.model.em3 import EM3Model
from recsys.runs.rundir import CHECKPOINTS_DIR

BEST = "best"  # checkpoints/best: the weights of the best validation epoch


def build_model(cfg: TrainConfig, layout: FeatureLayout, tokens: HasTokens | None, env: DistEnv,
                checkpoint: Path | None = None,
                print_plan: bool = False) -> DistributedModelParallel:
    """Builds the EM3 model on ``meta``, shards it for ``env`` and, when given, loads
    ``checkpoint`` (resharding to this world).

    Returns:
        The ``EM3Model`` wrapped by ``DistributedModelParallel``: what runs forward (and the
        loss, ``with_loss=True``) and holds the fused sparse optimizer. ``em3_of`` reaches
        the module inside for its parameter groups and ranking model.

    Raises:
        UsageError: a ``ranking`` setting this device or world cannot run.
    """
    em3 = EM3Model(layout, cfg, tokens, device="meta")
    try:
        model = shard_model(em3, cfg.ranking_config(), env, print_plan=print_plan)
    except ConfigError as err:  # e.g. a table_sharding this device cannot run
        raise UsageError(f"ranking: {err}") from err
    if checkpoint is not None:
        load_checkpoint(checkpoint, model)
    return model


def em3_of(model: torch.nn.Module) -> EM3Model:
    """The ``EM3Model`` inside ``model`` (a ``build_model`` result, whose tables DMP sharded in
    place), or ``model`` itself when it is one."""
    inner = model.module if isinstance(model, DistributedModelParallel) else model
    if not isinstance(inner, EM3Model):
        raise TypeError(f"expected an EM3Model, or one wrapped by DMP; got {type(inner).__name__}")
    return inner


def best_checkpoint(run_dir: Path) -> Path | None:
    """The run's best-epoch checkpoint, else its latest, else None."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    return latest_checkpoint(root / BEST) or latest_checkpoint(root)


def apply_threads(cfg: TrainConfig) -> None:
    """Sets torch's intra-op threads from the config (0 keeps torch's default). Training and
    evaluation both call it, so they reduce in the same order and score rows identically."""
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)


def autocast(device: torch.device) -> torch.autocast:
    """bf16 autocast of the whole forward pass on a GPU; a no-op elsewhere (on CPU the ranking
    model's own ``cpu_precision`` decides)."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
