"""docs/results.md's sections on prepared shards (``results/scale.json``,
``results/shard_stream.json``, ``results/spark_prepare.json``), written by
``benchmarks/readme_results.py`` beside its other sections."""

from __future__ import annotations

from benchmarks.readme_em3_speed import _targets


def _head(r: dict, title: str) -> list[str]:
    return [f"## {title}: `{r['command']}`", "", f"{r['date']}, {r['machine'].get('cpu', 'CPU')}, "
            f"{r['machine'].get('cores', '?')} cores (shared; load averages are in the JSON).", ""]


def scale_section(s: dict) -> list[str]:
    """The 100M-row benchmark: preparation and training per log size."""
    out = _head(s, "Scale: bounded-memory preparation and streamed training") + [
        "| log | prepare (s) | rows/s | prepare peak RSS (MiB) | shards (MiB) | train 1 proc "
        "(samples/s) | peak RSS (MiB) | train 2 procs (samples/s) | peak RSS per proc (MiB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    out += [f"| {r['size']} | {r['prep_s']:,.0f} | {r['prep_rows_per_s']:,.0f} | "
            f"{r['prep_peak_rss_mb']:,.0f} | {r['shard_mb']:,.0f} | {r['train1_samples_per_s']:,.0f} | "
            f"{r['train1_peak_rss_mb']:,.0f} | {r['train2_samples_per_s']:,.0f} | "
            f"{r['train2_peak_rss_mb']:,.0f} |" for r in s["rows"]]
    return out + ["", "![growth](../benchmarks/results/scale_growth.png)", "", "Targets:", "",
                  *_targets(s["targets"]), ""]


def shard_stream_section(s: dict) -> list[str]:
    """Streaming from shards against the in-memory loader."""
    out = _head(s, "Streaming from prepared shards") + ["| case | samples/s (median) |",
                                                         "|---|---:|"]
    out += [f"| {r['case']} | {r['median_samples_per_s']:,.0f} |" for r in s["rows"]]
    return out + ["", "Targets:", "", *_targets(s["targets"]), ""]


def spark_section(s: dict) -> list[str]:
    """The Spark job's shards against the polars ones, and training on both."""
    out = _head(s, "Preparing with Spark") + [
        "| dataset | rows | Spark (s) | polars (s) | shards equal | test metrics identical "
        "| test AUC (polars / Spark shards) |", "|---|---:|---:|---:|---|---|---|"]
    out += [f"| {r['dataset']} | {r['rows']:,} | {r['spark_s']:.0f} | {r['polars_s']:.2f} | "
            f"{'yes' if r['shards_equal'] else '**no**'} | "
            f"{'yes' if r['metrics_identical'] else '**no**'} | "
            f"{r['test_auc']:.4f} / {r['test_auc_spark']:.4f} |" for r in s["rows"]]
    return out + ["", "Targets:", "", *[line.replace("1.0000", "true") for line in
                                       _targets(_as_numbers(s["targets"]))], ""]


def _as_numbers(targets: list[dict]) -> list[dict]:
    """Boolean target values as 1.0 / 0.0, so one formatter prints every target."""
    return [{**t, "value": float(t["value"])} for t in targets]
