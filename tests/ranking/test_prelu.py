"""ranking.prelu.PReLU: a drop-in nn.PReLU whose backward is exactly ATen's."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ranking.archs import DINAttention
from ranking.prelu import PReLU
from ranking.testing.tower import aten_prelu


def _grads(module: nn.Module, x: torch.Tensor, grad: torch.Tensor):
    x = x.clone().requires_grad_(True)
    y = module(x)
    y.backward(grad)
    return y.detach(), x.grad, module.weight.grad.clone()


@pytest.mark.parametrize("shape", [(7, 5), (300, 64), (4, 3, 8)])
def test_forward_and_gradients_are_bit_identical_to_nn_prelu(shape) -> None:
    torch.manual_seed(0)
    x = torch.randn(shape)
    x.view(-1)[:4] = torch.tensor([0.0, -0.0, 1e-30, -1e-30])  # the x > 0 boundary
    grad = torch.randn(shape)
    ours, reference = PReLU(init=0.3), nn.PReLU(init=0.3)
    y1, gx1, gw1 = _grads(ours, x, grad)
    y2, gx2, gw2 = _grads(reference, x, grad)
    assert torch.equal(y1, y2)
    assert torch.equal(gx1, gx2)
    assert torch.equal(gw1, gw2)
    assert gw1.shape == (1,) and gw1.item() != 0.0


def test_weight_gradient_is_the_sum_over_non_positive_inputs() -> None:
    x = torch.tensor([[2.0, -1.0], [-3.0, 0.5]], requires_grad=True)
    prelu = PReLU(init=0.25)
    prelu(x).backward(torch.tensor([[1.0, 2.0], [4.0, 8.0]]))
    assert prelu.weight.grad.item() == pytest.approx(-1.0 * 2.0 + -3.0 * 4.0)
    assert x.grad.tolist() == [[1.0, 0.5], [1.0, 8.0]]


def test_per_channel_slope_falls_back_to_aten() -> None:
    torch.manual_seed(1)
    x, grad = torch.randn(6, 4), torch.randn(6, 4)
    ours, reference = PReLU(num_parameters=4), nn.PReLU(num_parameters=4)
    for a, b in zip(_grads(ours, x, grad), _grads(reference, x, grad), strict=True):
        assert torch.equal(a, b)


def test_state_dict_matches_nn_prelu_and_din_uses_it() -> None:
    assert PReLU().state_dict().keys() == nn.PReLU().state_dict().keys()
    din = DINAttention(dim=4, hidden=(8, 4), softmax=False, dropout=0.0,
                       device=torch.device("cpu"))
    assert [type(m) for m in din.unit if isinstance(m, nn.PReLU)] == [PReLU, PReLU]


def test_bit_identical_under_bf16_autocast() -> None:
    """The GPU trainer runs under bf16 autocast: ours must match ATen's there too."""
    results = []
    for cls in (nn.PReLU, PReLU):
        torch.manual_seed(2)
        linear, act = nn.Linear(8, 64), cls()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = act(linear(torch.randn(500, 8)))
        (y.float() * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        results.append((y.detach(), act.weight.grad, linear.weight.grad))
    assert results[0][0].dtype == results[1][0].dtype == torch.bfloat16
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


def test_aten_prelu_runs_nn_prelu_on_the_same_weights_inside_the_block_only() -> None:
    """The switch ``benchmarks/train_step.py`` times (variant ``aten_prelu_eager``)."""
    torch.manual_seed(3)
    din = DINAttention(dim=4, hidden=(8, 4), softmax=False, dropout=0.0,
                       device=torch.device("cpu"))
    ours = [m for m in din.unit if isinstance(m, nn.PReLU)]
    names = [n for n, _ in din.named_parameters()]
    query, keys, mask = torch.randn(3, 4), torch.randn(3, 5, 4), torch.rand(3, 5) > 0.3
    want = din(query, keys, mask)
    with aten_prelu(din):
        inside = [m for m in din.unit if isinstance(m, nn.PReLU)]
        assert [type(m) for m in inside] == [nn.PReLU, nn.PReLU]
        assert all(a.weight is b.weight for a, b in zip(inside, ours, strict=True))
        assert [n for n, _ in din.named_parameters()] == names
        got = din(query, keys, mask)
    assert torch.equal(got, want)
    assert all(a is b for a, b in zip([m for m in din.unit if isinstance(m, nn.PReLU)], ours,
                                      strict=True))
