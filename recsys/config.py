"""The training config: one dataclass tree, loaded from TOML presets (``recsys/presets``).

``recsys train em3 --set content.seq_mode="frozen" --set train.epochs=2`` maps onto these fields;
``TrainConfig`` is written back next to every run as ``config.toml``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from data.prepare import PrepareConfig
from ranking.config import RankingConfig
from recsys.config_io import (
    apply_overrides,
    config_from_dict,
    config_to_dict,
    flatten,
    read_toml,
    to_toml,
)
from recsys.errors import UsageError


def _min(value: float) -> dict:
    return {"min": value}


@dataclass
class DataSection:
    """Which data, and how it is derived (docs/design.md §4.4)."""

    dir: str = ""  # dataset directory; `--data` on the command line sets it
    max_history: int = field(default=20, metadata=_min(1))
    # "time": the log's first 80% / next 10% / last 10% in time; "user_time": each user's
    # rows 80/10/10 in time (every user in test); "leave_last_out": each user's last row test.
    split: Literal["time", "user_time", "leave_last_out"] = "time"
    # The log's last days only label retention (see data.prepare.PrepareConfig.tail_days).
    tail_days: int = field(default=14, metadata=_min(0))
    # The user's smoothed rate of the primary label before each row (a dense logit and two
    # pooled buckets, data/prior_rate.py). On MovieLens most of id_only's test AUC comes from
    # it; on the synthetic world it adds a little (docs/cli.md, "The user's prior rate").
    prior_rate: bool = True
    # The same for the target item, over every user's earlier rows: its main effect, which
    # the item ID embedding under-learns on MovieLens (docs/ranking.md, "Within-user ranking":
    # on there on validation, level on the synthetic world).
    item_prior_rate: bool = True
    allow_missing_media: bool = False
    # Training from prepared shards (--data PREPARED, docs/prepared_shards.md): the train split
    # is cut into blocks of `block_rows` rows, whose order is shuffled per epoch and which are
    # dealt to ranks; rows are shuffled within `shuffle_buffer_rows` (whole blocks), which is
    # also about the rows one chunk holds in memory (three chunks at most are). No effect when
    # training from a dataset directory (every row is shuffled in memory).
    block_rows: int = field(default=65_536, metadata=_min(1))
    shuffle_buffer_rows: int = field(default=524_288, metadata=_min(1))

    def __post_init__(self) -> None:
        if self.shuffle_buffer_rows < self.block_rows:
            raise ValueError(f"data.shuffle_buffer_rows ({self.shuffle_buffer_rows}) must hold at "
                             f"least one block (data.block_rows = {self.block_rows})")


@dataclass
class ContentSection:
    """The multimodal side: frozen encoders, token cache, Fusion-Q-Former, sequence mode."""

    enabled: bool = True
    vision: str = "tiny"  # hub id, local path or "tiny"
    text: str = "tiny"
    tokens: int = field(default=16, metadata=_min(1))  # text tokens kept per item
    # "qformer": the Fusion-Q-Former turns tokens into content, trained end to end (EM3).
    # "pooled": each item's pooled token vectors are fixed features, only projected to
    # `hidden` (multimodal/pooled_content.py; the frozen_content baseline); the Q-Former and
    # LoRA settings then do nothing, and seq_mode may only be "none" or "frozen".
    fusion: Literal["qformer", "pooled"] = "qformer"
    variant: Literal["self", "cross"] = "self"
    hidden: int = field(default=32, metadata=_min(1))
    layers: int = field(default=1, metadata=_min(1))
    heads: int = field(default=2, metadata=_min(1))
    num_queries: int = field(default=4, metadata=_min(1))
    dropout: float = field(default=0.0, metadata={"min": 0.0, "max": 0.99})
    # "none": history attends over ID embeddings only; otherwise how history content is encoded.
    seq_mode: Literal["none", "frozen", "lora", "full"] = "lora"
    lora_r: int = field(default=4, metadata=_min(1))
    lora_alpha: int = field(default=8, metadata=_min(1))
    lora_dropout: float = field(default=0.0, metadata={"min": 0.0, "max": 0.99})
    lora_targets: list[str] = field(default_factory=lambda: ["query", "value"])
    dedup: bool = True
    # None = the encoder's default: recompute the history pass in backward for lora (the
    # memory saving of the LoRA path comes from this), keep activations otherwise.
    checkpoint_history: bool | None = None
    # On CPU, the precision of the Q-Former's passes (multimodal/content.py): "bf16" runs them
    # under bfloat16 autocast (float32 weights and optimizer state), "fp32" in float32, "auto"
    # = fp32 (bf16 is opt-in: docs/multimodal.md, "Precision and speed", has the measured
    # speed and the 3-seed quality gap). A GPU run autocasts everything to bf16 regardless.
    cpu_precision: Literal["auto", "bf16", "fp32"] = "auto"

    @property
    def cpu_bf16(self) -> bool:
        """Whether the Q-Former runs under bf16 autocast on CPU (``cpu_precision``)."""
        return self.cpu_precision == "bf16"

    def __post_init__(self) -> None:
        if self.fusion == "pooled" and self.seq_mode not in ("none", "frozen"):
            raise ValueError(f'fusion = "pooled" trains no content model, so seq_mode must be '
                             f'"none" or "frozen" (the history reads the same fixed vectors), '
                             f'got {self.seq_mode!r}')


@dataclass
class CICSection:
    """Content-ID contrastive loss: total = Σ BCE + weight · CIC."""

    # 0.1 (with the interest loss on): in the exploration runs on the default world it beat
    # λ = 1 on click and cold-item AUC. At λ = 1 the CIC gradient (≈ ln B early on) dominates
    # the ID tables' row-wise Adagrad state and slows the ranking (docs/training.md, "Why the
    # interest term, and why CIC at 0.1", has the figures).
    weight: float = field(default=0.1, metadata=_min(0.0))
    temperature: float = field(default=0.1, metadata=_min(1e-4))
    proj_dim: int = field(default=32, metadata=_min(1))


@dataclass
class InterestSection:
    """Interest contrastive loss (recsys/model/interest.py): total += weight · interest.

    Needs history content (``content.seq_mode`` other than ``none``); ignored otherwise.
    """

    # 1.0: in the exploration runs on the default world the interest loss is what let the
    # content embeddings learn the world's hidden topic (a linear probe finds it far more often
    # with it), and em3's click and cold-item AUC rose with it (docs/training.md, "Why the
    # interest term, and why CIC at 0.1", has the figures).
    weight: float = field(default=1.0, metadata=_min(0.0))
    temperature: float = field(default=0.1, metadata=_min(1e-4))
    proj_dim: int = field(default=32, metadata=_min(1))
    # Epochs over which the weight ramps linearly from 0 to ``weight``; 0 (the default) = full
    # weight from the first step. Why one might: early on the interest gradient is most of the
    # Q-Former's (MovieLens em3) while the loss is still at chance, and MovieLens picks its best
    # epoch early. A one-epoch warm-up moved em3's test AUC only inside the seed spread on both
    # datasets, so the presets leave it off (docs/training.md, "A warm-up for the interest
    # loss", has the figures).
    warmup_epochs: float = field(default=0.0, metadata=_min(0.0))


@dataclass
class LossSection:
    """Weights of the ranking loss terms (the CIC weight is in [cic])."""

    # Weight of each retention head's BCE relative to a label head. Chosen while the retention
    # heads shared the tower with the label heads: at weight 1 they pulled it away from the
    # labels, and 0.2 was better on click, cold-item and return_7d AUC (id_only, default
    # synthetic world; docs/training.md, "The model (recsys/model/em3.py)", has the figures).
    retention_weight: float = field(default=0.2, metadata=_min(0.0))


@dataclass
class OptimSection:
    """Learning rates of the dense groups (the sparse tables' optimizer is in ``ranking``)."""

    qformer_lr: float = field(default=1e-3, metadata=_min(0.0))
    adapter_lr: float = field(default=2e-3, metadata=_min(0.0))
    weight_decay: float = field(default=0.0, metadata=_min(0.0))
    grad_clip: float = field(default=1.0, metadata=_min(0.0))  # 0 = no clipping


@dataclass
class TrainSection:
    """The loop: epochs, batches, early stopping, checkpoints."""

    epochs: int = field(default=3, metadata=_min(1))
    batch_size: int = field(default=512, metadata=_min(1))
    eval_batch_size: int = field(default=2048, metadata=_min(1))
    seed: int = field(default=0, metadata={"min": 0, "max": 2**32 - 1})  # numpy's seed range
    patience: int = field(default=1, metadata=_min(0))  # epochs without improvement before stopping
    early_stop_metric: Literal["auc", "gauc", "logloss"] = "auc"  # of the primary label on valid
    checkpoint_every: int = field(default=100, metadata=_min(0))  # steps; 0 = end of epoch only
    max_steps_per_epoch: int = field(default=0, metadata=_min(0))  # 0 = the whole epoch
    # torch intra-op CPU threads per process; 0 = torch's default (one per core). 1 is the
    # default because these small ops lose far more to OpenMP contention than they gain on a
    # loaded machine (docs/cli.md, "Threads and processes", has the measurement). Scale out
    # with processes (torchrun) instead.
    threads: int = field(default=1, metadata=_min(0))
    # torch.compile the ranking model's dense tower (attention, interaction, tower, heads):
    # "auto" = on CPU where a C++ compiler is found (the eager id_only step is slower there:
    # docs/cli.md, "Compiled dense tower"; docs/results.md, "Training step"), "on" = everywhere
    # or fail, "off" = eager.
    compile: Literal["auto", "on", "off"] = "auto"


@dataclass
class TrackingSection:
    """MLflow: every run is tracked unless disabled; results are never lost to tracking."""

    enabled: bool = True
    uri: str = ""  # "" = sqlite:///mlflow.db in the working directory
    model_name: str = "em3-ranker"


@dataclass
class TrainConfig:
    name: str = "em3"
    data: DataSection = field(default_factory=DataSection)
    content: ContentSection = field(default_factory=ContentSection)
    ranking: RankingConfig = field(default_factory=RankingConfig)
    cic: CICSection = field(default_factory=CICSection)
    interest: InterestSection = field(default_factory=InterestSection)
    loss: LossSection = field(default_factory=LossSection)
    optim: OptimSection = field(default_factory=OptimSection)
    train: TrainSection = field(default_factory=TrainSection)
    tracking: TrackingSection = field(default_factory=TrackingSection)

    def __post_init__(self) -> None:
        # Settings of the ranking model that recsys train derives or replaces: refused rather
        # than silently overwritten.
        if self.ranking.content_dim != 0:
            raise ValueError("ranking.content_dim is derived from [content] (content.hidden when "
                             "content.enabled); set those instead")
        if not self.ranking.use_history_content:
            raise ValueError("ranking.use_history_content is derived from content.seq_mode "
                             '("none" = no history content); set that instead')
        if self.ranking.dense_weight_decay != 0:
            raise ValueError("ranking.dense_weight_decay: recsys train decays every dense group "
                             "by optim.weight_decay; set that instead")

    @property
    def uses_content(self) -> bool:
        return self.content.enabled

    @property
    def uses_cic(self) -> bool:
        return self.content.enabled and self.cic.weight > 0

    @property
    def uses_interest(self) -> bool:
        """Needs history content: content enabled and a sequence path."""
        return self.content.enabled and self.content.seq_mode != "none" and self.interest.weight > 0

    def prepare_config(self) -> PrepareConfig:
        return PrepareConfig(max_history=self.data.max_history, split=self.data.split,
                             tail_days=self.data.tail_days, prior_rate=self.data.prior_rate,
                             item_prior_rate=self.data.item_prior_rate)

    def ranking_config(self) -> RankingConfig:
        """The ranking config with the content wiring derived from the content section."""
        d = self.ranking.to_dict()
        d["content_dim"] = self.content.hidden if self.content.enabled else 0
        d["use_history_content"] = self.content.enabled and self.content.seq_mode != "none"
        return RankingConfig.from_dict(d)


# The version of the config.toml that ``train_config_toml`` writes (its ``schema`` key). Add a
# setting whose default does not reproduce how earlier runs trained: bump it and give
# ``_MIGRATIONS`` the step from the previous version, so every saved run still loads as it was
# trained.
CONFIG_SCHEMA = 2


def _schema_1_to_2(raw: dict[str, Any]) -> dict[str, Any]:
    """Schema 1 (files with no ``schema`` key, written before it existed) may lack settings
    added since; each gets the value that reproduces how such a run trained."""
    for (section, key), value in {("ranking", "prior_offset"): False,
                                  ("data", "item_prior_rate"): False,
                                  ("ranking", "detach_history_ids"): False}.items():
        raw.setdefault(section, {}).setdefault(key, value)
    return raw


_MIGRATIONS = {1: _schema_1_to_2}


def migrate_config(raw: dict[str, Any], unversioned: int, source: str | Path) -> dict[str, Any]:
    """``raw`` (a read TOML, its ``schema`` key removed) brought to ``CONFIG_SCHEMA``.

    Args:
        unversioned: the schema a file without a ``schema`` key has: 1 for a saved run's
            config.toml (written before versions), ``CONFIG_SCHEMA`` for a preset or a
            config a user wrote (its missing settings take today's defaults).
        source: named in errors.

    Raises:
        UsageError: an unknown or newer schema.
    """
    version = raw.pop("schema", unversioned)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise UsageError(f"config {source}: schema must be a positive integer, got {version!r}")
    if version > CONFIG_SCHEMA:
        raise UsageError(f"config {source}: schema {version} was written by a newer recsys "
                         f"(this one reads up to {CONFIG_SCHEMA}); upgrade recsys to use it")
    while version < CONFIG_SCHEMA:
        raw = _MIGRATIONS[version](raw)
        version += 1
    return raw


def load_train_config(source: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """A preset name (``em3``, ``id_only``, ...) or a TOML path, with ``key=value`` overrides."""
    raw = migrate_config(read_toml(source), CONFIG_SCHEMA, source)
    return config_from_dict(TrainConfig, apply_overrides(raw, overrides or []))


def load_run_config(path: str | Path) -> TrainConfig:
    """A saved run's ``config.toml``, migrated to today's schema: a setting added after the
    run was trained takes the value the run was trained with, not today's default."""
    return config_from_dict(TrainConfig, migrate_config(read_toml(path), 1, path))


# What a resumed run may change: where things are and how fast they run, and how long it
# trains; everything else decides what the run is and must match the saved config.
_FREE_ON_RESUME = ("name", "data.dir", "ranking.cpu_precision", "content.cpu_precision",
                   "train.epochs", "train.patience", "train.threads", "train.compile", "train.checkpoint_every",
                   "train.eval_batch_size", "tracking.")


def resume_differences(saved: TrainConfig, given: TrainConfig) -> list[str]:
    """The settings where ``given`` (the config a resume was started with) departs from
    ``saved`` (the run's, ``load_run_config``) other than ``_FREE_ON_RESUME``, as
    ``"section.key: run <v>, given <v>"``, sorted."""
    a, b = flatten(config_to_dict(saved)), flatten(config_to_dict(given))
    return [f"{k}: run {a.get(k)!r}, given {b.get(k)!r}" for k in sorted(a.keys() | b.keys())
            if a.get(k) != b.get(k) and not k.startswith(_FREE_ON_RESUME)]


def train_config_toml(cfg: TrainConfig) -> str:
    """``cfg`` as the TOML a run keeps (``config.toml``), versioned by ``CONFIG_SCHEMA``."""
    return to_toml({"schema": CONFIG_SCHEMA, **config_to_dict(cfg)})
