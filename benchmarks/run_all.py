"""Runs every benchmark of the project and collects their results into one report.

    python benchmarks/run_all.py                 # run all, then write the report
    python benchmarks/run_all.py --collect-only  # only rebuild the report from results/*.json
    python benchmarks/run_all.py --only metrics_speed data_pipeline

Writes ``benchmarks/results/REPORT.md`` (one table per benchmark, its targets, the machine it
ran on) and plots: step time and peak memory vs sequence length per sequence mode, and test
AUC per model variant.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import RESULTS_DIR, machine  # noqa: E402

# In dependency-free order; quality and peers are the long ones (tens of minutes on 2 cores).
BENCHMARKS = ("metrics_speed", "data_pipeline", "din_attention", "ranking_throughput", "train_step",
              "sequence_modes", "quality", "peers")


def run(names: list[str]) -> dict[str, int]:
    codes = {}
    for name in names:
        print(f"== {name}", flush=True)
        codes[name] = subprocess.run([sys.executable, str(REPO / "benchmarks" / f"{name}.py")],
                                     cwd=REPO).returncode
    return codes


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1e5 else f"{v:,.0f}"
    return "" if v is None else str(v)


def table(rows: list[dict]) -> str:
    cols = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def plot_sequence_modes(result: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if r.get("dedup")]
    paths = []
    for key, ylabel, name in (("step_s", "step time (s)", "sequence_modes_step.png"),
                              ("peak_mem_mb", "peak memory (MB)", "sequence_modes_memory.png")):
        fig, ax = plt.subplots(figsize=(5, 3.2))
        for mode in dict.fromkeys(r["mode"] for r in rows):
            for ckpt in (False, True):
                pts = sorted((r["seq_len"], r[key]) for r in rows
                             if r["mode"] == mode and bool(r.get("checkpoint")) == ckpt)
                if pts:
                    ax.plot(*zip(*pts, strict=True), marker="o",
                            label=f"{mode}{' + ckpt' if ckpt else ''}")
        ax.set_xlabel("sequence length L")
        ax.set_ylabel(ylabel)
        ax.set_xscale("log")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        paths.append(out / name)
    return paths


def plot_quality(result: dict, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 3.4), squeeze=False)
    for ax, ds in zip(axes[0], datasets, strict=True):
        sub = [r for r in rows if r["dataset"] == ds]
        x = range(len(sub))
        ax.bar([i - 0.2 for i in x], [r["auc"] for r in sub], 0.4, yerr=[r["auc_std"] for r in sub],
               label="AUC")
        ax.bar([i + 0.2 for i in x], [r["auc_cold_item"] or 0 for r in sub], 0.4,
               yerr=[r["auc_cold_item_std"] or 0 for r in sub], label="cold-item AUC")
        ax.set_xticks(list(x), [r["preset"] for r in sub], rotation=30, ha="right", fontsize=7)
        # From chance (0.5) up, unless a bar is below it: that one must still show.
        lowest = min(v for r in sub for v in (r["auc"], r["auc_cold_item"]) if v is not None)
        ax.set_ylim(min(0.5, lowest - 0.03), max(r["auc"] for r in sub) + 0.05)
        ax.axhline(0.5, color="grey", linewidth=0.6)
        ax.set_title(ds)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "quality_auc.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def report(out: Path = RESULTS_DIR) -> Path:
    parts = ["# Benchmark report", "", f"Collected on: `{json.dumps(machine())}`", ""]
    for path in sorted(out.glob("*.json")):
        result = json.loads(path.read_text())
        parts += [f"## {result['benchmark']}", "",
                  f"`{result['command']}` on {result['machine'].get('cpu')} "
                  f"({result['machine'].get('cores')} cores, GPU: {result['machine'].get('gpu')}), "
                  f"{result['date']}", "", table(result["rows"]), ""]
        if result.get("targets"):
            parts += ["Targets:", "", table(result["targets"]), ""]
        if result["benchmark"] == "sequence_modes":
            parts += [f"![{p.stem}]({p.name})" for p in plot_sequence_modes(result, out)] + [""]
        if result["benchmark"] == "quality" and result["rows"]:
            parts += [f"![quality]({plot_quality(result, out).name})", ""]
    path = out / "REPORT.md"
    path.write_text("\n".join(parts))
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--collect-only", action="store_true", help="only rebuild the report")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run only these benchmarks")
    args = parser.parse_args()
    codes = {} if args.collect_only else run(list(args.only or BENCHMARKS))
    print(f"wrote {report()}")
    failed = [n for n, c in codes.items() if c != 0]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
