"""The per-item token features every content model reads: one row per item of the item table.

``TokenTensors`` is what a ``TokenCache`` exposes (memory-mapped fp16) and what
``ItemContentEncoder`` consumes; tests and benchmarks may also build one in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TokenTensors:
    """Token features of N items.

    Attributes:
        vision: N x Tv x Dv (fp16 in a cache) visual tokens; zeros where masked.
        vision_mask: N x Tv bool, True where a token holds content; an all-False row means the
            item has no image.
        text: N x Tt x Dt textual tokens; zeros where masked.
        text_mask: N x Tt bool; an all-False row means the item has no text.
    """

    vision: torch.Tensor
    vision_mask: torch.Tensor
    text: torch.Tensor
    text_mask: torch.Tensor

    def __post_init__(self) -> None:
        n = self.vision.shape[0]
        if self.vision.dim() != 3 or self.text.dim() != 3:
            raise ValueError(f"vision and text must be N x T x D, got {tuple(self.vision.shape)} "
                             f"and {tuple(self.text.shape)}")
        for name, t, ref in (("vision_mask", self.vision_mask, self.vision),
                             ("text_mask", self.text_mask, self.text)):
            if t.dtype != torch.bool or tuple(t.shape) != tuple(ref.shape[:2]):
                raise ValueError(f"{name} must be bool {tuple(ref.shape[:2])}, got {t.dtype} "
                                 f"{tuple(t.shape)}")
        if self.text.shape[0] != n:
            raise ValueError(f"vision has {n} rows but text has {self.text.shape[0]}")

    @property
    def num_items(self) -> int:
        return int(self.vision.shape[0])

    @property
    def vision_dim(self) -> int:
        return int(self.vision.shape[2])

    @property
    def text_dim(self) -> int:
        return int(self.text.shape[2])

    def gather(self, rows: torch.Tensor, device: torch.device | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Token features of ``rows`` (N long) moved to ``device``.

        Returns (vision N x Tv x Dv, vision_mask N x Tv, text N x Tt x Dt, text_mask N x Tt),
        in the stored dtype (the Q-Former casts).
        """
        rows = rows.to(self.vision.device)
        out = (self.vision.index_select(0, rows), self.vision_mask.index_select(0, rows),
               self.text.index_select(0, rows), self.text_mask.index_select(0, rows))
        if device is None:
            return out
        return tuple(t.to(device, non_blocking=True) for t in out)  # type: ignore[return-value]
