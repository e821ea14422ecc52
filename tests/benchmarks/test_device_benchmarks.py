"""The benchmarks that also run on a GPU: one code path per device, a clear error without one."""

from __future__ import annotations

import pytest
import torch

from benchmarks import din_attention, sequence_modes


@pytest.fixture
def restore_threads():
    previous = torch.get_num_threads()
    yield
    torch.set_num_threads(previous)


def _check_din_row(row: dict) -> None:
    assert row["dim"] == 16 and 0.3 < row["valid_share"] < 0.5
    assert row["plain_ms"] > 0 and row["ours_ms"] > 0
    assert row["speedup"] == pytest.approx(row["plain_ms"] / row["ours_ms"], rel=0.02)


def _check_sequence_row(row: dict) -> None:
    assert (row["mode"], row["seq_len"], row["dedup"], row["checkpoint"]) == ("lora", 10, True, True)
    assert row["step_s"] > 0 and row["peak_mem_mb"] > 0
    # Dedup: at most the batch's targets plus its distinct history items went through.
    assert 0 < row["item_passes"] <= sequence_modes.BATCH * 11
    assert 0 < row["sequence_trainable_params"] < row["trainable_params"]


def test_cpu_cases_measure_on_cpu(restore_threads) -> None:
    _check_din_row(din_attention.case(16, 0.4, "cpu"))
    _check_sequence_row(sequence_modes.run_case("lora", 10, True, True, repeats=1, threads=1,
                                                device="cpu"))


@pytest.mark.parametrize("module", [din_attention, sequence_modes])
def test_cuda_without_a_gpu_is_one_clear_error(module, capsys, monkeypatch) -> None:
    # The error is about a machine without a GPU, whatever machine runs the test.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--device", "cuda"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no CUDA device" in err[0]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_cases_measure_on_the_gpu(restore_threads) -> None:
    _check_din_row(din_attention.case(16, 0.4, "cuda"))
    torch.cuda.reset_peak_memory_stats()
    _check_sequence_row(sequence_modes.run_case("lora", 10, True, True, repeats=1, threads=1,
                                                device="cuda"))
    assert torch.cuda.max_memory_allocated() > 0
