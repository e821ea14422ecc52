"""One dataclass that is the source of truth for the ranking model, its sharding and optimizers."""

from __future__ import annotations

import typing
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

SHARDING_TYPES = ("table_wise", "column_wise", "data_parallel", "row_wise", "table_row_wise")
COMPUTE_KERNELS = ("fused", "dense", "fused_uvm", "fused_uvm_caching")


def _range(lo: float | None = None, hi: float | None = None) -> dict[str, float]:
    """Field metadata: the inclusive bounds of a number (``min``, ``max``)."""
    return {k: v for k, v in (("min", lo), ("max", hi)) if v is not None}


def field_problems(config: Any) -> list[str]:
    """What is wrong with a config dataclass's values, as ``"<name>: must be ..."``: a value
    outside its ``Literal`` type's choices or its metadata's ``min``/``max``.

    The one validation style of every config section: types and bounds are declared on the
    fields, and ``recsys``'s TOML loader checks the same declarations with the same messages
    (prefixed by the section's dotted key).
    """
    hints = typing.get_type_hints(type(config))
    out = []
    for f in fields(config):
        value, tp = getattr(config, f.name), hints[f.name]
        if typing.get_origin(tp) is Literal and value not in typing.get_args(tp):
            out.append(f"{f.name}: must be one of {list(typing.get_args(tp))}, got {value!r}")
        if isinstance(value, int | float) and not isinstance(value, bool):
            if "min" in f.metadata and value < f.metadata["min"]:
                out.append(f"{f.name}: must be >= {f.metadata['min']}, got {value!r}")
            if "max" in f.metadata and value > f.metadata["max"]:
                out.append(f"{f.name}: must be <= {f.metadata['max']}, got {value!r}")
    return out


def native_cpu_bf16() -> bool:
    """Whether this CPU has bf16 matmul instructions (AVX512-BF16 or AMX tiles): without
    them bf16 is emulated and slower than float32."""
    import torch

    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


class ConfigError(ValueError):
    """A ``RankingConfig`` value that this model, device or world cannot run (found when the
    model is sharded, not when the config is read); callers report it as bad input."""


@dataclass
class RankingConfig:
    """Hyper-parameters of the ID-only / content-aware DIN + DCNv2 ranking model.

    Attributes:
        embedding_dim: D, width of every ID embedding table.
        bag_pooling: how a multi-valued feature's bag of embeddings becomes one D-vector
            (``"mean"`` or ``"sum"``); an empty bag gives zeros either way.
        attention_hidden: hidden sizes of the DIN activation unit (the MLP that scores each
            history item against the target).
        attention_softmax: normalise DIN scores with a masked softmax; ``False`` keeps the
            original DIN weighting (raw scores, padding zeroed), which preserves intensity.
        interaction: ``"dcn"`` (DCNv2 cross network) or ``"dlrm"`` (pairwise dot products).
        dcn_layers: number of cross layers.
        dcn_low_rank: rank r of the low-rank cross layers (``W = U V``); 0 = full rank.
        over_arch: hidden sizes of the MLP tower between the interaction and the heads.
        dropout: dropout after every tower / attention hidden layer.
        content_dim: Dc, width of the caller's content embeddings; 0 = ID-only baseline.
        use_history_content: concatenate content to the history ID embeddings in the DIN
            attention (needs ``content_dim > 0`` and ``hist_content`` at forward time).
        retention_heads: add one logit per retention label of the layout.
        retention_own_tower: put the retention heads on an MLP of their own that reads the
            click tower's output through a stop-gradient and the user ID embedding
            (``archs.RetentionTower``), instead of on the shared tower next to the label heads.
        retention_hidden: hidden sizes of that MLP.
        item_id_dropout: share of training rows whose target item ID is hidden (replaced by
            the learned unknown-item embedding that cold items get at inference), so the
            model learns to score an item from its content and categoricals alone
            (DropoutNet-style). 0 disables it.
        prior_offset: add the dense ``prior_logit`` feature (the logit of the user's smoothed
            prior rate of the primary label, ``data.prior_rate``) to the primary head's logit
            through a learned scale that starts at 1, so the tower learns the residual over
            the user's own rate (an offset, as in a GLM). Ignored when the layout has no
            ``prior_logit``.
        detach_history_ids: read the history's item ID embeddings without gradient, so the
            shared item table learns from target positions only. Each liked item is a history
            key of up to L later rows, and those gradients (what it says about the user's next
            items) would otherwise outnumber and blur the item's own effect as a target
            (docs/ranking.md, "Within-user ranking"). The attention unit still trains.
        user_id_dropout: share of training rows whose user ID is replaced by the OOV index,
            the row every user unseen in training reads at inference; without it that row is
            never trained and a cold user scores with a random initial vector. 0 disables it.
        table_sharding: per-table planner constraints, keyed by table name (``table_item``)
            or feature name (``item``): ``{"sharding_type": ..., "compute_kernel": ...}``.
        sparse_optimizer: fused (in-backward) optimizer of the embedding tables; on CPU FBGEMM
            supports ``rowwise_adagrad``, ``adagrad`` and ``sgd`` only.
        sparse_lr: learning rate of the sparse optimizer.
        sparse_eps: epsilon of the Adagrad-family sparse optimizers.
        dense_optimizer: optimizer of every other parameter (and of data-parallel tables).
        dense_lr: learning rate of the dense optimizer.
        dense_weight_decay: weight decay of the dense optimizer.
        cpu_precision: on CPU, the precision of the dense tower's matmuls (attention unit,
            interaction, tower): ``"bf16"`` runs them under bfloat16 autocast (float32
            weights, optimizer state and heads), ``"fp32"`` in float32, ``"auto"`` picks bf16
            for an ID-only model (``content_dim = 0``) where the CPU has native bf16
            instructions (AVX512-BF16 or AMX), fp32 otherwise. A GPU run autocasts the whole
            forward pass to bf16 regardless.
    """

    embedding_dim: int = field(default=16, metadata=_range(1))
    bag_pooling: Literal["mean", "sum"] = "mean"
    attention_hidden: tuple[int, ...] = (64, 32)
    attention_softmax: bool = False
    interaction: Literal["dcn", "dlrm"] = "dcn"
    dcn_layers: int = field(default=2, metadata=_range(0))
    dcn_low_rank: int = field(default=0, metadata=_range(0))
    over_arch: tuple[int, ...] = (128, 64)
    dropout: float = field(default=0.0, metadata=_range(0.0, 0.99))
    content_dim: int = field(default=0, metadata=_range(0))
    use_history_content: bool = True
    retention_heads: bool = True
    retention_own_tower: bool = False
    retention_hidden: tuple[int, ...] = (32,)
    item_id_dropout: float = field(default=0.0, metadata=_range(0.0, 0.99))
    detach_history_ids: bool = True
    user_id_dropout: float = field(default=0.0, metadata=_range(0.0, 0.99))
    # On by default: it raised test AUC of id_only and em3 on both datasets and narrowed em3's
    # spread over seeds on MovieLens (docs/ranking.md, "Prior offset", has the figures).
    prior_offset: bool = True
    table_sharding: dict[str, dict[str, str]] = field(default_factory=dict)
    sparse_optimizer: Literal["rowwise_adagrad", "adagrad", "sgd", "adam"] = "rowwise_adagrad"
    sparse_lr: float = field(default=0.05, metadata=_range(0.0))
    sparse_eps: float = field(default=1e-8, metadata=_range(0.0))
    dense_optimizer: Literal["adam", "adamw", "adagrad", "sgd"] = "adamw"
    dense_lr: float = field(default=1e-3, metadata=_range(0.0))
    dense_weight_decay: float = field(default=0.0, metadata=_range(0.0))
    cpu_precision: Literal["auto", "bf16", "fp32"] = "auto"

    def __post_init__(self) -> None:
        # TOML gives lists; tuples keep the config hashable-looking and immutable in spirit.
        self.attention_hidden = tuple(int(h) for h in self.attention_hidden)
        self.over_arch = tuple(int(h) for h in self.over_arch)
        self.retention_hidden = tuple(int(h) for h in self.retention_hidden)
        problems = field_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        for table, constraint in self.table_sharding.items():
            unknown = set(constraint) - {"sharding_type", "compute_kernel"}
            if unknown:
                raise ValueError(f"table_sharding[{table!r}] has unknown keys {sorted(unknown)}")
            st = constraint.get("sharding_type")
            if st is not None and st not in SHARDING_TYPES:
                raise ValueError(
                    f"table_sharding[{table!r}].sharding_type must be one of {SHARDING_TYPES}, "
                    f"got {st!r}"
                )
            ck = constraint.get("compute_kernel")
            if ck is not None and ck not in COMPUTE_KERNELS:
                raise ValueError(
                    f"table_sharding[{table!r}].compute_kernel must be one of {COMPUTE_KERNELS}, "
                    f"got {ck!r}"
                )

    @property
    def uses_content(self) -> bool:
        return self.content_dim > 0

    @property
    def cpu_bf16(self) -> bool:
        """Whether the dense tower runs under bf16 autocast on CPU (``cpu_precision``).

        ``"auto"`` leaves a model with content in float32: there the tower's backward is also
        the content model's training signal, and the tower is a few percent of the step
        (docs/ranking.md, "CPU precision").
        """
        if self.cpu_precision == "auto":
            return self.content_dim == 0 and native_cpu_bf16()
        return self.cpu_precision == "bf16"

    @property
    def attends_history_content(self) -> bool:
        """Whether the DIN keys (and query) carry content next to the ID embedding."""
        return self.content_dim > 0 and self.use_history_content

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["attention_hidden"] = list(self.attention_hidden)
        d["over_arch"] = list(self.over_arch)
        d["retention_hidden"] = list(self.retention_hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RankingConfig:
        """Builds a config from a (TOML-loaded) mapping; unknown keys are an error, not ignored."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown ranking config keys: {sorted(unknown)}")
        return cls(**d)
