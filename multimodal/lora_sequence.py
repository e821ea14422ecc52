"""LoRA adapters for the behaviour-sequence path of the Fusion-Q-Former (peft).

One Q-Former module serves both paths. LoRA layers are injected with
``peft.inject_adapter_in_model``; then

- the target path runs inside ``adapters_disabled(qformer)``: base weights only, trainable;
- the history path runs through ``run_with_frozen_base(qformer, ...)``: base + LoRA, where the
  base parameters are swapped for detached copies (``torch.func.functional_call``), so a loss on
  the history gives gradient to the adapters only and autograd keeps nothing for base-weight
  gradients.

Both helpers are pure functions of the module state at call time, which is what activation
checkpointing needs: a checkpointed history chunk re-runs the same helper during backward.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn
from torch.func import functional_call

ADAPTER = "history"          # peft adapter name of the sequence path
ADAPTER_MARKER = "lora_"     # every peft LoRA parameter name contains it (lora_A, lora_B, ...)


@dataclass(frozen=True)
class LoraSettings:
    """LoRA hyper-parameters of the history path.

    Attributes:
        r: rank of the update B @ A.
        alpha: scaling numerator (the update is scaled by ``alpha / r``).
        dropout: dropout on the LoRA input.
        targets: module-name suffixes to adapt, from the Q-Former's linears: ``query``, ``key``,
            ``value``, ``out``, ``fc1``, ``fc2``, ``vision_proj``, ``text_proj``.
    """

    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    targets: tuple[str, ...] = ("query", "value")

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"LoRA rank r must be >= 1, got {self.r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}")
        if not self.targets:
            raise ValueError("LoRA targets must name at least one module")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "targets": list(self.targets)}


def linear_names(module: nn.Module) -> set[str]:
    """Last name component of every ``nn.Linear`` in ``module`` (what LoRA may target)."""
    return {name.rsplit(".", 1)[-1] for name, m in module.named_modules() if isinstance(m, nn.Linear)}


def inject_history_adapter(module: nn.Module, settings: LoraSettings) -> None:
    """Injects LoRA layers named ``ADAPTER`` into ``module`` in place.

    peft marks everything but the adapters as frozen on injection; the base weights stay
    trainable here because the target path trains them.

    Raises:
        ValueError: a target names no linear of the module.
    """
    available = linear_names(module)
    unknown = [t for t in settings.targets if t not in available]
    if unknown:
        raise ValueError(f"LoRA targets {unknown} match no linear layer; available: {sorted(available)}")
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=list(settings.targets), bias="none")
    inject_adapter_in_model(config, module, adapter_name=ADAPTER)
    for name, p in module.named_parameters():
        if not is_adapter_name(name):
            # peft renames an adapted linear's weight to '<name>.base_layer.weight'.
            p.requires_grad_(name.replace(".base_layer", "") in trainable)


def is_adapter_name(name: str) -> bool:
    return ADAPTER_MARKER in name


def adapter_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The LoRA parameters of ``module`` (empty without adapters)."""
    return [p for n, p in module.named_parameters() if is_adapter_name(n)]


def base_parameters(module: nn.Module) -> list[nn.Parameter]:
    """Every parameter of ``module`` that is not a LoRA parameter."""
    return [p for n, p in module.named_parameters() if not is_adapter_name(n)]


def has_adapters(module: nn.Module) -> bool:
    return any(isinstance(m, BaseTunerLayer) for m in module.modules())


@contextmanager
def adapters_disabled(module: nn.Module) -> Iterator[None]:
    """Runs ``module`` with its LoRA layers bypassed (base weights only).

    Uses peft's ``BaseTunerLayer.enable_adapters``; peft also clears ``requires_grad`` on the
    adapters while disabled and sets it back on re-enabling, which is harmless here because
    a disabled adapter takes no part in the graph.
    """
    layers = [m for m in module.modules() if isinstance(m, BaseTunerLayer)]
    for m in layers:
        m.enable_adapters(False)
    try:
        yield
    finally:
        for m in layers:
            m.enable_adapters(True)


def run_with_frozen_base(module: nn.Module, *args: Any) -> Any:
    """Calls ``module(*args)`` with base parameters detached and LoRA parameters live.

    The result's gradient reaches the adapters (and the inputs) but never a base weight.
    """
    frozen = {n: p.detach() for n, p in module.named_parameters() if not is_adapter_name(n)}
    return functional_call(module, frozen, args, strict=False)


def count_parameters(params: list[torch.Tensor]) -> int:
    return int(sum(p.numel() for p in params))
