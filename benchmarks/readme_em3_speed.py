"""docs/results.md's section on the em3 training step (``results/em3_speed.json``), written by
``benchmarks/readme_results.py`` beside its other sections."""

from __future__ import annotations


def _targets(targets: list[dict]) -> list[str]:
    def value(v: float) -> str:
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.4f}"

    return [f"- `{t['name']}`: {value(t['value'])} (target {t['target']}): "
            f"{'met' if t['met'] else '**not met**'}" for t in targets]


def _cell(c: dict | None) -> str:
    return "" if c is None else f"{c['cpu_ms']:.1f} ({c['share']:.0%})"


def em3_speed_section(e: dict) -> list[str]:
    """Markdown lines: variants, the per-component split before/after, parity, targets."""
    out = [f"## em3 training step: `{e['command']}`", "",
           f"{e['date']}, {e['machine'].get('cpu', 'CPU')}. Variants alternate in one "
           f"process; the figures are medians over processes. {e.get('note', '')}", "",
           "| dataset | variant | precision | step CPU (ms) | samples/s | × before | MFLOPs/sample "
           "| MFU |", "|---|---|---|---:|---:|---:|---:|---:|"]
    out += [f"| {r['dataset']} | {r['variant']} | {r['precision']} | {r['step_cpu_ms']:.1f} | "
            f"{r['samples_per_s']:,.0f} | {r['speedup_vs_before']:.2f} | "
            f"{r['mflops_per_sample']:.2f} | {r['mfu']:.3f} |" for r in e["rows"]]
    out += ["", "Where the em3 step's time goes (each part alone, forward + backward, CPU ms):",
            "", "| dataset | component | before | shipped |", "|---|---|---:|---:|"]
    parts = {(c["dataset"], c["component"], c["variant"]): c for c in e.get("components", [])}
    for dataset, component in dict.fromkeys((d, c) for d, c, _ in parts):
        before, after = parts.get((dataset, component, "before")), parts.get(
            (dataset, component, "shipped"))
        out.append(f"| {dataset} | {component} | {_cell(before)} | {_cell(after)} |")
    parity = (e.get("parity") or {}).get("summary") or {}
    if parity:
        out += ["", "em3 with the Q-Former under CPU bf16 against float32 (test metrics, mean "
                "over the seeds both finished; `benchmarks/em3_parity.py`):", "",
                "| dataset | seeds | metric | fp32 | bf16 | bf16 − fp32 |",
                "|---|---|---|---:|---:|---:|"]
        for dataset, row in parity.items():
            for metric, m in row.items():
                if metric != "seeds":
                    out.append(f"| {dataset} | {len(row['seeds'])} | {metric} | {m['fp32']:.4f} "
                               f"| {m['bf16']:.4f} | {m['difference']:+.4f} |")
    return out + ["", "Targets:", "", *_targets(e["targets"]), ""]
