"""em3_speed's bookkeeping: the parity summary over the seeds both precisions finished, files
of side-by-side invocations merged, the parity targets, and its docs/results.md section."""

from __future__ import annotations

import json

import pytest

from benchmarks.em3_parity import TOLERANCE, merged, summary
from benchmarks.em3_speed import parity_targets
from benchmarks.readme_em3_speed import em3_speed_section


def run(seed: int, auc: float, cold: float | None = 0.6) -> dict:
    return {"seed": seed, "auc": auc, "gauc": auc - 0.01, "auc_cold_item": cold,
            "valid_auc": auc, "train_samples_per_s": 1000.0}


def test_summary_compares_the_seeds_both_precisions_finished():
    runs = {"synth": {"fp32": [run(0, 0.70), run(1, 0.72), run(2, 0.90)],
                      "bf16": [run(0, 0.701), run(1, 0.725)]}}
    row = summary(runs)["synth"]
    assert row["seeds"] == [0, 1]  # seed 2 has no bf16 run yet
    assert row["auc"]["fp32"] == pytest.approx(0.71) and row["auc"]["bf16"] == pytest.approx(0.713)
    assert row["auc"]["difference"] == pytest.approx(0.003)
    assert TOLERANCE == 0.002 and row["auc"]["within_tolerance"] is False
    targets = {t["name"]: t for t in parity_targets(summary(runs))}
    assert not targets["synth_em3_bf16_vs_fp32_auc_abs_difference"]["met"]
    assert targets["synth_em3_bf16_vs_fp32_auc_cold_item_abs_difference"]["met"]


def test_files_of_side_by_side_invocations_merge(tmp_path):
    a, b = tmp_path / "em3_parity_synth.json", tmp_path / "em3_parity_movielens.json"
    a.write_text(json.dumps({"runs": {"synth": {"fp32": [run(0, 0.7)], "bf16": [run(0, 0.7)]}}}))
    b.write_text(json.dumps({"runs": {"movielens": {"fp32": [run(0, 0.8)],
                                                    "bf16": [run(0, 0.81)]}}}))
    out = merged([a, b])
    assert set(out["summary"]) == {"synth", "movielens"}
    assert out["summary"]["movielens"]["auc"]["difference"] == pytest.approx(0.01)
    assert merged([]) is None


def test_results_section_shows_variants_split_parity_and_targets():
    e = {"command": "python benchmarks/em3_speed.py", "date": "2026-12-05",
         "machine": {"cpu": "AMD EPYC"}, "note": "n.",
         "rows": [{"dataset": "synth", "variant": v, "precision": "fp32", "step_cpu_ms": ms,
                   "samples_per_s": 512 / ms * 1e3, "speedup_vs_before": 200 / ms,
                   "mflops_per_sample": 1.0, "mfu": 0.1} for v, ms in (("before", 200.0),
                                                                       ("shipped", 80.0))],
         "components": [{"dataset": "synth", "variant": v, "component": "history_pass",
                         "cpu_ms": ms, "share": 0.5} for v, ms in (("before", 120.0),
                                                                    ("shipped", 30.0))],
         "parity": merged([]) or {"summary": summary(
             {"synth": {"fp32": [run(0, 0.7)], "bf16": [run(0, 0.7015)]}})},
         "targets": [{"name": "synth_em3_shipped_vs_before_speedup", "value": 2.5,
                      "target": ">= 2.0", "met": True}]}
    text = "\n".join(em3_speed_section(e))
    assert "| synth | shipped | fp32 | 80.0 | 6,400 | 2.50 |" in text
    assert "| synth | history_pass | 120.0 (50%) | 30.0 (50%) |" in text
    assert "| synth | 1 | auc | 0.7000 | 0.7015 | +0.0015 |" in text
    assert "`synth_em3_shipped_vs_before_speedup`: 2.5000 (target >= 2.0): met" in text
