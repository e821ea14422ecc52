"""benchmarks/run_all.py: the report keeps CPU and GPU figures apart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks import run_all
from benchmarks.common import write_results


def _sequence_rows(step_scale: float) -> list[dict]:
    return [{"mode": mode, "seq_len": n, "dedup": True, "checkpoint": mode == "lora",
             "step_s": step_scale * n, "peak_mem_mb": 10.0 * n, "item_passes": n,
             "trainable_params": 1, "sequence_trainable_params": 1}
            for mode in ("frozen", "lora") for n in (10, 50)]


def _write(results: Path, device: str, step_scale: float, monkeypatch) -> Path:
    monkeypatch.setattr("benchmarks.common.RESULTS_DIR", results)
    return write_results("sequence_modes", _sequence_rows(step_scale), [],
                         "python benchmarks/sequence_modes.py", device=device)


def test_gpu_results_go_to_their_own_folder_and_report_section(tmp_path, monkeypatch) -> None:
    cpu = _write(tmp_path, "cpu", 0.001, monkeypatch)
    gpu = _write(tmp_path, "cuda", 0.0001, monkeypatch)
    assert cpu == tmp_path / "sequence_modes.json"
    assert gpu == tmp_path / "gpu" / "sequence_modes.json"
    assert json.loads(gpu.read_text())["device"] == "cuda"

    text = run_all.report(tmp_path).read_text()
    cpu_part, gpu_part = text.split("## GPU")
    assert "![sequence_modes_step](sequence_modes_step.png)" in cpu_part
    assert "![gpu_sequence_modes_step](gpu_sequence_modes_step.png)" in gpu_part
    assert "No GPU figures" not in gpu_part
    # Each section's table holds its own step times: 50 * scale.
    assert "| 0.05 |" in cpu_part and "| 0.05 |" not in gpu_part
    assert "| 0.005 |" in gpu_part and "| 0.005 |" not in cpu_part
    for name in ("sequence_modes_step.png", "gpu_sequence_modes_step.png",
                 "gpu_sequence_modes_memory.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_report_says_when_no_gpu_figures_exist(tmp_path, monkeypatch) -> None:
    _write(tmp_path, "cpu", 0.001, monkeypatch)
    gpu_part = run_all.report(tmp_path).read_text().split("## GPU")[1]
    assert "No GPU figures recorded yet" in gpu_part
    assert "din_attention, sequence_modes" in gpu_part
    assert not (tmp_path / "gpu_sequence_modes_step.png").exists()


@pytest.mark.parametrize(("argv", "message"), [
    (["--gpu-only", "--only", "metrics_speed"], "none of ['metrics_speed'] runs on a GPU"),
    (["--gpu-only"], "torch sees no CUDA device"),
])
def test_gpu_only_refuses_what_it_cannot_run(argv, message, capsys, monkeypatch) -> None:
    # The refusal is about a machine without a GPU, whatever machine runs the test.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exit_info:
        run_all.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
