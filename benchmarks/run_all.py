"""Runs every benchmark of the project and collects their results into one report.

    python benchmarks/run_all.py                 # run all, then write the report
    python benchmarks/run_all.py --collect-only  # only rebuild the report from results/*.json
    python benchmarks/run_all.py --only metrics_speed data_pipeline
    python benchmarks/run_all.py --no-gpu        # skip the GPU pass even where a GPU is visible
    python benchmarks/run_all.py --gpu-only      # only the GPU pass (a GPU box without TorchRec)

Writes ``benchmarks/results/REPORT.md`` (one table per benchmark, its targets, the machine it
ran on) and plots: step time and peak memory vs sequence length per sequence mode, and test
AUC per model variant.

Where torch sees a CUDA device, the benchmarks of the parts that run without TorchRec (the
dense DIN unit and the multimodal content path, ``GPU_BENCHMARKS``) run a second time with
``--device cuda``; their JSON goes to ``benchmarks/results/gpu/`` and the report shows them in
a section of their own, with the GPU they ran on.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import GPU_SUBDIR, RESULTS_DIR, machine  # noqa: E402

# In dependency-free order; quality, peers, spark_prepare (installs pyspark into .venv-spark)
# and scale (a 100M-row log) are the long ones (tens of minutes to hours on 2 cores).
BENCHMARKS = ("metrics_speed", "data_pipeline", "din_attention", "ranking_throughput", "train_step",
              "em3_speed", "retention_tower", "sequence_modes", "predict_throughput", "shard_stream",
              "quality", "peers", "spark_prepare", "scale")
# Those that also run on a GPU (``--device cuda``): no TorchRec inside, so they run wherever
# torch has CUDA (the GPU machines here have no fbgemm-gpu build).
GPU_BENCHMARKS = ("din_attention", "sequence_modes")


def run(names: list[str], device: str = "cpu") -> dict[str, int]:
    """Runs each benchmark script in its own process → {name (device): exit status}."""
    codes = {}
    for name in names:
        label = name if device == "cpu" else f"{name} ({device})"
        print(f"== {label}", flush=True)
        cmd = [sys.executable, str(REPO / "benchmarks" / f"{name}.py")]
        if device != "cpu":
            cmd += ["--device", device]
        codes[label] = subprocess.run(cmd, cwd=REPO).returncode
    return codes


def gpu_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1e5 else f"{v:,.0f}"
    return "" if v is None else str(v)


def table(rows: list[dict]) -> str:
    cols = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def plot_sequence_modes(result: dict, out: Path, prefix: str = "") -> list[Path]:
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
        fig.savefig(out / (prefix + name), dpi=110)
        plt.close(fig)
        paths.append(out / (prefix + name))
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
        # A one-score row (the prior rate alone) has no std: no error bar.
        ax.bar([i - 0.2 for i in x], [r["auc"] for r in sub], 0.4,
               yerr=[r["auc_std"] or 0 for r in sub], label="AUC")
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


def section(result: dict, out: Path, plot_prefix: str = "") -> list[str]:
    """The report's Markdown lines for one benchmark's result (plots written into ``out``)."""
    m = result["machine"]
    parts = [f"### {result['benchmark']}", "",
             f"`{result['command']}` on {m.get('cpu')} ({m.get('cores')} cores, "
             f"GPU: {m.get('gpu')}), {result['date']}", "", table(result["rows"]), ""]
    if result.get("targets"):
        parts += ["Targets:", "", table(result["targets"]), ""]
    if result["benchmark"] == "sequence_modes":
        parts += [f"![{p.stem}]({p.name})"
                  for p in plot_sequence_modes(result, out, plot_prefix)] + [""]
    if result["benchmark"] == "quality" and result["rows"]:
        parts += [f"![quality]({plot_quality(result, out).name})", ""]
    return parts


def report(out: Path = RESULTS_DIR) -> Path:
    """Writes ``out/REPORT.md`` from ``out/*.json`` (CPU) and ``out/gpu/*.json`` (GPU)."""
    parts = ["# Benchmark report", "", f"Collected on: `{json.dumps(machine())}`", "",
             "## CPU", ""]
    for path in sorted(out.glob("*.json")):
        parts += section(json.loads(path.read_text()), out)
    parts += ["## GPU", ""]
    gpu_results = sorted((out / GPU_SUBDIR).glob("*.json"))
    if not gpu_results:
        parts += ["No GPU figures recorded yet: no run of this suite has seen a CUDA device. "
                  f"On a machine with one, `python benchmarks/run_all.py` also runs "
                  f"{', '.join(GPU_BENCHMARKS)} with `--device cuda` and records them here.", ""]
    for path in gpu_results:
        parts += section(json.loads(path.read_text()), out, plot_prefix="gpu_")
    path = out / "REPORT.md"
    path.write_text("\n".join(parts))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--collect-only", action="store_true", help="only rebuild the report")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run only these benchmarks")
    gpu = parser.add_mutually_exclusive_group()
    gpu.add_argument("--no-gpu", action="store_true",
                     help="do not run the GPU pass even where torch sees a CUDA device")
    gpu.add_argument("--gpu-only", action="store_true",
                     help="run only the GPU pass (its benchmarks with --device cuda); the CPU "
                          "results stay as they are")
    args = parser.parse_args(argv)
    names = list(args.only or BENCHMARKS)
    on_gpu = [n for n in names if n in GPU_BENCHMARKS]
    if args.gpu_only and not args.collect_only:
        if not on_gpu:
            parser.error(f"--gpu-only: none of {names} runs on a GPU; those that do: "
                         f"{', '.join(GPU_BENCHMARKS)}")
        if not gpu_available():
            parser.error("--gpu-only: torch sees no CUDA device on this machine")
    codes: dict[str, int] = {}
    if not args.collect_only:
        if not args.gpu_only:
            codes = run(names)
        if on_gpu and not args.no_gpu:
            if gpu_available():
                codes |= run(on_gpu, device="cuda")
            else:
                print("no CUDA device: GPU figures not recorded", flush=True)
    print(f"wrote {report()}")
    failed = [n for n, c in codes.items() if c != 0]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
