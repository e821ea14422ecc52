"""Switches of a built model's dense tower for one block, so that tests and benchmarks
compare two variants on the same weights, in the same process.

The production choices are made when the model is built: precision by
``RankingConfig.cpu_precision``, the PReLU by ``ranking.prelu``. A compiled tower runs
eagerly under ``torch.compiler.set_stance("force_eager")`` (PyTorch's own switch, nothing
here). ``benchmarks/train_step.py`` alternates variants repeat by repeat with these, because
on a shared machine step times differ more from one process to the next than between the
variants it compares.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

from ranking.model import RankingModel
from ranking.prelu import PReLU


@contextmanager
def float32_dense_tower(model: RankingModel) -> Iterator[None]:
    """Runs ``model``'s dense tower in float32 inside the block, whatever ``cpu_precision``
    chose. Positions are not bucketed then; an attention unit built for bucketed positions
    takes plain ones too. A compiled tower gets one more graph (no autocast)."""
    # The model's own flag, read in every forward: the one place that precision is decided.
    bf16, model._cpu_bf16 = model._cpu_bf16, False
    try:
        yield
    finally:
        model._cpu_bf16 = bf16


@contextmanager
def aten_prelu(model: nn.Module) -> Iterator[None]:
    """Swaps every ``ranking.prelu.PReLU`` in ``model`` for a ``torch.nn.PReLU`` holding the
    same weight ``Parameter`` inside the block (ATen's PReLU backward instead of ours), and
    puts the originals back after it. Optimizers keep working: the parameters are the same
    objects under the same names."""
    swapped: list[tuple[nn.Module, str, PReLU]] = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, PReLU):
                aten = nn.PReLU(child.num_parameters, device=child.weight.device)
                aten.weight = child.weight
                setattr(parent, name, aten)
                swapped.append((parent, name, child))
    try:
        yield
    finally:
        for parent, name, original in swapped:
            setattr(parent, name, original)
