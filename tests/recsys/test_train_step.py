"""One training step: the wrapped module computes the loss, clipping addresses groups by name."""

from __future__ import annotations

import pytest
import torch

from ranking.optim import dense_parameters
from recsys.config import load_train_config
from tests.recsys.train_fixtures import TINY


def _trainer(world, tmp_path, preset: str = "em3", *overrides: str):
    from ranking.dist import init_process_group_from_env
    from recsys.training.train import Trainer

    cfg = load_train_config(preset, [*TINY, f'data.dir="{world}"', "train.compile=off",
                                     *overrides])
    return Trainer(cfg, tmp_path / preset, init_process_group_from_env(), progress=False)


def test_the_wrapped_module_computes_the_same_loss_as_em3_loss(world, tmp_path):
    from recsys.model.build import em3_of

    trainer = _trainer(world, tmp_path)
    assert trainer.em3 is em3_of(trainer.model) is trainer.model.module  # one module, one handle
    batch = next(iter(trainer.loader))
    trainer.model.eval()  # no dropout: two forwards give the same numbers
    with torch.no_grad():
        out = trainer.model(batch, with_loss=True, interest_scale=0.5)
        plain = trainer.model(batch)
        loss, parts = trainer.em3.loss(plain, batch, interest_scale=0.5)
    assert plain.loss is None and plain.loss_parts is None
    assert torch.equal(out.loss, loss) and out.loss_parts == parts
    assert {"cic", "interest", "loss", "bce_like"} <= set(parts)
    # The interest scale reaches the loss: at 0 the interest term drops out.
    with torch.no_grad():
        off = trainer.model(batch, with_loss=True, interest_scale=0.0)
    assert off.loss_parts["interest"] == parts["interest"]
    assert float(off.loss) < float(out.loss)


def test_clipping_bounds_the_joint_norm_of_every_dense_group_and_no_table(world, tmp_path):
    from recsys.training.optim import DENSE_GROUPS, clip_dense_gradients

    trainer = _trainer(world, tmp_path)
    named = {g.get("name") for g in trainer.optimizer.param_groups}
    assert set(DENSE_GROUPS) <= named  # em3 has all three: ranking, Q-Former, adapters
    dense = dense_parameters(trainer.model)
    grouped = [p for g in trainer.optimizer.param_groups if g.get("name") in DENSE_GROUPS
               for p in g["params"]]
    assert {id(p) for p in grouped} == {id(p) for p in dense.values()}
    torch.manual_seed(0)
    for p in dense.values():
        p.grad = torch.randn_like(p) * 10
    before = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in dense.values()]))
    assert before > 1.0
    clip_dense_gradients(trainer.optimizer, 1.0)
    after = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in dense.values()]))
    assert float(after) == pytest.approx(1.0, rel=1e-5)


def test_a_train_step_changes_only_what_it_trains_and_reports_the_loss_parts(world, tmp_path):
    trainer = _trainer(world, tmp_path, "id_only")
    batch = next(iter(trainer.loader))
    before = {k: v.detach().clone() for k, v in dense_parameters(trainer.model).items()}
    parts = trainer.train_step(batch)
    assert set(parts) >= {"loss", "bce_like"} and all(map(float.__instancecheck__, parts.values()))
    after = dense_parameters(trainer.model)
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_mfu_is_read_against_the_peak_of_the_precision_the_step_uses(world, tmp_path):
    from recsys.training.perf import peak_flops

    fp32 = _trainer(world, tmp_path, "em3", 'ranking.cpu_precision="fp32"')
    bf16 = _trainer(world, tmp_path, "em3", 'ranking.cpu_precision="fp32"',
                    'content.cpu_precision="bf16"')
    cpu = torch.device("cpu")
    # Best-of-trials on a shared machine: compare against fresh readings with a margin.
    assert fp32.peak == pytest.approx(peak_flops(cpu, torch.float32), rel=0.5)
    assert bf16.peak == pytest.approx(peak_flops(cpu, torch.bfloat16), rel=0.5)
    if torch.backends.mkldnn.is_available() and peak_flops(cpu, torch.bfloat16) > 1.5 * fp32.peak:
        assert bf16.peak > 1.5 * fp32.peak  # native bf16: a higher peak, a lower (honest) MFU
