"""PReLU with a faster backward pass: same parameters, same forward, bit-identical gradients.

Why our own: ATen's ``_prelu_kernel_backward`` computes both gradients in one
two-output TensorIterator loop that is not vectorised on CPU, then reduces a full-size weight
gradient. In the DIN activation unit (N valid history positions x 64) it was the second
largest op of a MovieLens ``id_only`` training step in the profiler. The backward below uses
only vectorised kernels (``threshold_backward``, ``mul``, ``sum``) and is faster on those
shapes (docs/ranking.md, "The unit's PReLU has our own backward", has the measurements;
``benchmarks/train_step.py`` times the whole step).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _PReLUFunction(torch.autograd.Function):
    """``y = x if x > 0 else w * x`` for a single shared slope ``w`` (shape ``(1,)``)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor,
                weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return F.prelu(x, weight)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx,
                 grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, weight = ctx.saved_tensors
        # grad where x > 0, else 0; the other positions then get w * grad. Written as
        # g_pos + w * (g - g_pos) so that every element is exactly what ATen computes
        # (x > 0: g + w * 0 = g; x <= 0: 0 + w * g), not merely close to it.
        grad_pos = torch.ops.aten.threshold_backward(grad, x, 0)
        grad_x = grad_pos + weight * (grad - grad_pos)
        # d/dw = Σ x * g over x <= 0; the same elements summed in the same order as ATen's
        # reduction of its weight gradient, so the sum is identical too.
        grad_w = (x.clamp(max=0) * grad).sum().reshape(weight.shape)
        return grad_x, grad_w


class PReLU(nn.PReLU):
    """``nn.PReLU`` (same ``weight`` parameter and state-dict key) with the fast backward.

    Only the single-slope form (``num_parameters=1``) takes the fast path; a per-channel
    slope falls back to ATen.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: any shape → same shape."""
        if self.num_parameters != 1:
            return super().forward(x)
        return _PReLUFunction.apply(x, self.weight)
