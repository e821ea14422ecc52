"""The README's headline and docs/results.md are the recorded JSON (benchmarks/readme_results.py)."""

from __future__ import annotations

import subprocess
import sys

from benchmarks import readme_results as rr


def test_readme_and_results_doc_are_up_to_date_with_the_json() -> None:
    proc = subprocess.run([sys.executable, str(rr.REPO / "benchmarks" / "readme_results.py"),
                           "--check"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "up to date"


def test_every_recorded_table_row_is_in_the_results_doc() -> None:
    doc = rr.RESULTS_DOC.read_text()
    q, p, t = rr.load("quality"), rr.load("peers"), rr.load("train_step")
    for rows in (rr.quality_table(q), rr.peers_table(p), rr.train_step_table(t),
                 rr.target_lines(q["targets"]), rr.target_lines(p["targets"])):
        assert rows and all(r in doc for r in rows)


def test_the_shard_benchmarks_are_in_the_results_doc_row_by_row() -> None:
    from benchmarks.readme_shards import scale_section, shard_stream_section, spark_section

    doc = rr.RESULTS_DOC.read_text()
    scale, spark = rr.load("scale"), rr.load("spark_prepare")
    for section in (scale_section(scale), shard_stream_section(rr.load("shard_stream")),
                    spark_section(spark)):
        assert all(line in doc for line in section)
    last = scale["rows"][-1]
    rows = [line for line in scale_section(scale) if line.startswith(f"| {last['size']} |")]
    assert len(rows) == 1 and f"| {last['prep_peak_rss_mb']:,.0f} |" in rows[0]
    assert sum("| yes | yes |" in line for line in spark_section(spark)) == len(spark["rows"])
    spark["rows"][0]["shards_equal"] = False
    assert "| **no** | yes |" in "\n".join(spark_section(spark))


def test_tables_render_what_a_row_says() -> None:
    q = {"rows": [{"dataset": "d", "preset": "p", "seeds": 3, "auc": 0.71234, "auc_std": 0.01,
                   "gauc": None, "auc_cold_item": 0.6, "auc_cold_item_std": 0.0,
                   "gauc_cold_item": 0.55, "gauc_cold_item_std": 0.02}]}
    assert rr.quality_table(q) == [
        "| d | `p` | 3 | 0.7123 ± 0.0100 | n/a | 0.6000 ± 0.0000 | 0.5500 ± 0.0200 | before 2026-12-05 |"]
    q["rows"][0]["recorded"] = "2026-12-05"
    assert rr.quality_table(q)[0].endswith("| 2026-12-05 |")
    p = {"summary": [{"model": "m", "dataset": "d", "test_auc": 0.7, "gauc": 0.65, "logloss": 0.5,
                      "auc_cold_item": None, "train_samples_per_s": 12345.6, "peak_rss_mb": 700.4}]}
    assert rr.peers_table(p) == ["| m | d | 0.7000 | 0.6500 | 0.5000 | – | 12,346 | 700 |"]


def test_the_headline_gives_each_gap_with_its_interval() -> None:
    def g(gain: float) -> dict:
        return {"gain": gain, "ci_low": gain - 0.01, "ci_high": gain + 0.01}

    p = {"paired": {"ml": {"champion": "FuxiCTR 2.3.10 DNN", "challenger": "ours",
                           "auc": g(0.004), "gauc": g(-0.002), "logloss": g(0.001)}}}
    q = {"paired_real": {"ml": {"vs_best_id": {"champion": "id_only", "challenger": "em3 + real towers",
                                               "auc": g(0.001), "gauc": g(0.006),
                                               "auc_cold_item": g(0.03)}}}}
    assert rr.gap_rows(p, q) == [
        "| ml | `id_only` − FuxiCTR 2.3.10 DNN | +0.0040 [-0.0060, +0.0140] | "
        "-0.0020 [-0.0120, +0.0080] | – | +0.0010 [-0.0090, +0.0110] |",
        "| ml | `em3 + real towers` − `id_only` | +0.0010 [-0.0090, +0.0110] | "
        "+0.0060 [-0.0040, +0.0160] | +0.0300 [+0.0200, +0.0400] | – |"]


def test_results_recorded_with_overrides_get_their_own_labelled_rows(tmp_path) -> None:
    import json

    gap = {"gain": 0.01, "ci_low": -0.01, "ci_high": 0.02}
    peers = {"command": 'python benchmarks/peers.py --seeds 3 --set data.split="user_time"',
             "paired": {"movielens": {"champion": "FuxiCTR DNN", "auc": gap, "gauc": gap}}}
    (tmp_path / "peers-set-abc.json").write_text(json.dumps(peers))
    (tmp_path / "peers.json").write_text(json.dumps({"command": "python benchmarks/peers.py"}))
    variants = rr.set_variants(tmp_path)
    assert variants == [("data.split=user_time", peers, None)]  # no quality-set-abc.json yet
    rows = rr.headline({}, {}, variants).splitlines()
    assert any(r.startswith("| movielens (data.split=user_time) | `id_only` − FuxiCTR DNN | "
                            "+0.0100 [-0.0100, +0.0200]") for r in rows)
