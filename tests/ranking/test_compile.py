"""The dense tower through ``torch.compile`` (Inductor, CPU): same logits and gradients as
eager for any batch size, in training and evaluation, and dispatch modes kept out of the
compiled path."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters
from torch.utils.flop_counter import FlopCounterMode

from ranking.config import RankingConfig
from ranking.model import RankingModel
from recsys.training.perf import compile_unavailable, count_flops
from tests.ranking.fixtures import toy_world
from tests.ranking.test_model import DC, content_for

pytestmark = pytest.mark.skipif(compile_unavailable(torch.device("cpu")) is not None,
                                reason="Inductor needs a C++ compiler on CPU")

CASES = [  # interaction, content_dim, softmax, cpu_precision (dropout 0: no masks drawn)
    ("dcn", 0, False, "fp32"),
    ("dlrm", DC, True, "fp32"),
    ("dcn", DC, False, "bf16"),
]
# (rtol, atol) of logits and of gradients under fp32. Fused kernels round differently: close,
# not equal.
TOLERANCE = {"fp32": ((1e-4, 1e-5), (1e-3, 1e-5))}
# Under bf16 autocast each matmul input is rounded to 8 significant bits and Inductor rounds in
# other places than eager, so bf16 compares whole tensors, ‖got − want‖ / ‖want‖. Gradients
# that sum many small terms (the attention unit's first-layer bias sums over every history
# position) differ by up to ~5% between eager and compiled, and by up to ~7% from float32; a
# wrong graph is off by O(1).
BF16_RELATIVE_ERROR = 0.1


def assert_close(got: torch.Tensor, want: torch.Tensor, precision: str, grad: bool) -> None:
    if precision == "fp32":
        rtol, atol = TOLERANCE["fp32"][int(grad)]
        torch.testing.assert_close(got, want, rtol=rtol, atol=atol)
    else:
        error = float((got - want).norm() / want.norm().clamp_min(1e-12))
        assert got.dtype == want.dtype and error < BF16_RELATIVE_ERROR, error


def twin_models(config: RankingConfig) -> tuple[RankingModel, RankingModel]:
    world = toy_world()
    torch.manual_seed(0)
    eager = RankingModel(world.layout, config)
    compiled = RankingModel(world.layout, config)
    compiled.load_state_dict(eager.state_dict())
    compiled.compile_dense_tower()
    return eager, compiled


def logits_and_grads(model: RankingModel, batch, content: dict) -> tuple[dict, dict]:
    model.zero_grad(set_to_none=True)
    out = model(batch, **content)
    sum(v.sum() for v in out.logits.values()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    return {k: v.detach() for k, v in out.logits.items()}, grads


@pytest.mark.parametrize("interaction,content_dim,softmax,precision", CASES)
def test_compiled_tower_matches_eager_for_every_batch_size(interaction, content_dim, softmax,
                                                           precision):
    config = RankingConfig(embedding_dim=8, interaction=interaction, content_dim=content_dim,
                           attention_softmax=softmax, attention_hidden=(16, 8), over_arch=(16,),
                           cpu_precision=precision)
    eager, compiled = twin_models(config)
    torch._dynamo.reset()
    counters.clear()
    world = toy_world()
    # Three batch sizes, and so three numbers of valid history positions.
    for size, seed in ((48, 1), (37, 2), (64, 3)):
        batch = world.batches(size, size, seed=seed)[0]
        content = content_for(config, size, seed)
        want_logits, want_grads = logits_and_grads(eager, batch, content)
        got_logits, got_grads = logits_and_grads(compiled, batch, content)
        for name in want_logits:
            assert_close(got_logits[name], want_logits[name], precision, grad=False)
        assert got_grads.keys() == want_grads.keys()
        for name in want_grads:
            assert_close(got_grads[name], want_grads[name], precision, grad=True)
    # The compiled path ran (an Inductor cache hit may add a size-range guard and so a second
    # graph, which is why this is not "== 1").
    trained = counters["stats"]["unique_graphs"]
    assert trained >= 1
    # Evaluation mode is its own graph, and scores like eager too.
    eager.eval()
    compiled.eval()
    batch = world.batches(40, 40, seed=4)[0]
    with torch.no_grad():
        want = eager(batch, **content_for(config, 40, 4)).logits
        got = compiled(batch, **content_for(config, 40, 4)).logits
    for name in want:
        assert_close(got[name], want[name], precision, grad=False)
    assert counters["stats"]["unique_graphs"] > trained


def test_flop_counting_runs_eager_and_leaves_the_tower_compiled():
    config = RankingConfig(embedding_dim=8, attention_hidden=(16,), over_arch=(16,))
    eager, compiled = twin_models(config)
    batch = toy_world().batches(32, 32, seed=5)[0]
    torch._dynamo.reset()
    counters.clear()
    counted = count_flops(lambda: sum(v.sum() for v in compiled(batch).logits.values()).backward())
    with FlopCounterMode(display=False) as reference:
        sum(v.sum() for v in eager(batch).logits.values()).backward()
    assert counted == reference.get_total_flops() > 0
    assert counters["stats"]["unique_graphs"] == 0  # nothing was traced under the mode
    compiled(batch)
    assert counters["stats"]["unique_graphs"] == 1  # the next call compiles as usual
