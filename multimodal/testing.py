"""Helpers for the tests and benchmarks of ``multimodal``; production code never imports
this module.

``count_item_passes`` counts how many items an ``ItemContentEncoder`` pushes through its
Q-Former, from outside: a forward pre-hook on the Q-Former adds the rows of every call,
whichever path made it (target, history chunks, the LoRA path's ``functional_call``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from multimodal.content import ItemContentEncoder
from multimodal.qformer import FusionQFormer


@dataclass
class ItemPasses:
    """Q-Former item passes (rows encoded) counted so far."""

    rows: int = 0


@contextmanager
def count_item_passes(encoder: ItemContentEncoder) -> Iterator[ItemPasses]:
    """Counts the items ``encoder``'s Q-Former encodes inside the block.

    Wrap the forward only: a checkpointed history (``checkpoint_history``) runs its Q-Former
    again during backward, and that recomputation is not a new item pass.

    Yields:
        An ``ItemPasses`` whose ``rows`` grows by N for every Q-Former call on N items (its
        first input is N x T x D vision tokens).
    """
    passes = ItemPasses()

    def count(_module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        passes.rows += int(args[0].shape[0])

    handle = encoder.qformer.register_forward_pre_hook(count)
    try:
        yield passes
    finally:
        handle.remove()


@contextmanager
def full_last_block(qformer: FusionQFormer) -> Iterator[None]:
    """Inside the block, ``qformer``'s last ``self`` block runs over every position, as it did
    before it updated only the K query positions (``SelfBlock.forward``'s ``keep``): the same
    outputs and gradients at more FLOPs, what ``benchmarks/em3_speed.py``'s ``before`` times."""
    last = qformer.blocks[-1]
    whole = last.forward
    k = qformer.config.num_queries
    # An instance attribute shadows the class's forward for this block only.
    last.forward = lambda x, allow, keep=None: whole(x, allow)[:, :k] if keep else whole(x, allow)
    try:
        yield
    finally:
        del last.forward
