"""The README's benchmark tables are the recorded JSON (benchmarks/readme_results.py)."""

from __future__ import annotations

import pytest

from benchmarks import readme_results as rr


@pytest.fixture(scope="module")
def readme() -> str:
    return rr.README.read_text()


def test_quality_table_in_readme_is_the_recorded_json(readme: str) -> None:
    q = rr.load("quality")
    rows = rr.quality_table(q)
    assert len(rows) == len(q["rows"]) >= 2
    missing = [r for r in rows if r not in readme]
    assert not missing, f"README quality table differs from quality.json: {missing[:2]}"
    targets = rr.target_lines(q["targets"])
    assert targets and all(line in readme for line in targets)


def test_peers_table_in_readme_and_doc_is_the_recorded_json(readme: str) -> None:
    p = rr.load("peers")
    rows = rr.peers_table(p)
    assert len(rows) == len(p["summary"]) >= 2
    doc = rr.PEERS_DOC.read_text()
    for text, where in ((readme, "README"), (doc, "docs/peers.md")):
        missing = [r for r in rows if r not in text]
        assert not missing, f"{where} side-by-side table differs from peers.json: {missing[:2]}"
    targets = rr.target_lines(p["targets"])
    assert targets and all(line in readme for line in targets)


def test_train_step_table_in_readme_is_the_recorded_json(readme: str) -> None:
    rows = rr.train_step_table(rr.load("train_step"))
    assert len(rows) == 2 * len(rr.TRAIN_STEP_VARIANTS)
    missing = [r for r in rows if r not in readme]
    assert not missing, f"README training-step table differs from train_step.json: {missing[:2]}"


def test_tables_render_what_a_row_says() -> None:
    q = {"rows": [{"dataset": "d", "preset": "p", "seeds": 3, "auc": 0.71234, "auc_std": 0.01,
                   "gauc": None, "auc_cold_item": 0.6, "auc_cold_item_std": 0.0,
                   "gauc_cold_item": 0.55, "gauc_cold_item_std": 0.02},
                  {"dataset": "d", "preset": "one", "seeds": 1, "auc": 0.7, "auc_std": 0.0,
                   "gauc": 0.69, "gauc_std": 0.0, "auc_cold_item": 0.6, "auc_cold_item_std": 0.0,
                   "gauc_cold_item": 0.5, "gauc_cold_item_std": 0.0}]}
    assert rr.quality_table(q) == [
        "| d | `p` | 3 | 0.7123 ± 0.0100 | n/a | 0.6000 ± 0.0000 | 0.5500 ± 0.0200 |",
        "| d | `one` | 1 | 0.7000 | 0.6900 | 0.6000 | 0.5000 |"]
    p = {"summary": [{"model": "m", "dataset": "d", "test_auc": 0.7, "gauc": 0.65,
                      "auc_cold_item": None, "train_samples_per_s": 12345.6,
                      "first_epoch_samples_per_s": None, "peak_rss_mb": 700.4}]}
    assert rr.peers_table(p) == ["| m | d | 0.7000 | 0.6500 | – | 12,346 | – | 700 |"]
