"""``recsys demo``: the main job on the embedded default (the synthetic multimodal world).

world → validation + summary → token cache → train ``id_only`` and ``em3`` (tracked in MLflow,
registered as versions of one model) → test metrics → candidate selection → a comparison table
and plot. Finished runs are reused on a second call (``--fresh`` retrains).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

PRESETS = ("id_only", "em3")
MODEL_NAME = "em3-demo"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "demo", help="run the main job on the synthetic multimodal world",
        description="Synthesise the default world (once), validate it, train the ID-only baseline "
        "and EM3 on it, evaluate both on the test split, track them in MLflow, select the A/B "
        "candidate and print a comparison table. Everything lands in --dir.")
    parser.add_argument("--dir", type=Path, default=Path("demo"), help="working directory (default: demo)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the world and of training (default 0)")
    parser.add_argument("--fresh", action="store_true", help="retrain even where a finished run exists")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override applied to both presets (e.g. train.epochs=1)")
    parser.set_defaults(func=run)


def _train_or_reuse(preset: str, world: Path, run_dir: Path, uri: str, seed: int,
                    overrides: list[str], fresh: bool) -> dict:
    from recsys.config import load_train_config
    from recsys.runs import rundir
    from recsys.training.train import train

    if (run_dir / rundir.METRICS_FILE).is_file() and not fresh:
        print(f"[{preset}] reusing the finished run in {run_dir}")
        return json.loads((run_dir / rundir.METRICS_FILE).read_text())
    shutil.rmtree(run_dir, ignore_errors=True)
    cfg = load_train_config(preset, [*overrides, f"data.dir={json.dumps(str(world))}",
                                     f"train.seed={seed}", f"tracking.uri={json.dumps(uri)}",
                                     f"tracking.model_name={json.dumps(MODEL_NAME)}"])
    print(f"[{preset}] training into {run_dir}", flush=True)
    return train(cfg, run_dir, preset=preset)


def comparison_rows(results: dict[str, dict], label: str) -> list[dict]:
    rows = []
    for preset, m in results.items():
        lab, ret = m["labels"][label], m["retention"]
        rows.append({"model": preset, "auc": lab["auc"], "gauc": lab["gauc"],
                     "auc_cold_item": lab["auc_cold_item"], "logloss": lab["logloss"],
                     "return_7d_auc": ret["return_7d"]["auc"], "return_14d_auc": ret["return_14d"]["auc"],
                     "train_samples_per_s": m["throughput"]["train_samples_per_s"]})
    return rows


def _print_table(rows: list[dict], label: str) -> None:
    from rich.console import Console
    from rich.table import Table

    headers = {"model": "model", "auc": "AUC", "gauc": "GAUC", "auc_cold_item": "cold AUC",
               "logloss": "logloss", "return_7d_auc": "ret7 AUC", "return_14d_auc": "ret14 AUC",
               "train_samples_per_s": "samples/s"}
    table = Table(title=f"test split, label '{label}'")
    for col in rows[0]:
        table.add_column(headers[col], justify="left" if col == "model" else "right")
    for r in rows:
        table.add_row(*[f"{v:.4f}" if isinstance(v, float) and k != "train_samples_per_s"
                        else f"{v:,.0f}" if isinstance(v, float) else str(v) for k, v in r.items()])
    # Not a terminal (make, CI logs): rich would assume 80 columns and cut the headers.
    Console(width=max(100, shutil.get_terminal_size().columns)).print(table)


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = ["auc", "gauc", "auc_cold_item", "return_7d_auc"]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / len(rows)
    for i, r in enumerate(rows):
        ax.bar([j + i * width for j in range(len(metrics))],
               [r[m] or 0.0 for m in metrics], width, label=r["model"])
    ax.set_xticks([j + width * (len(rows) - 1) / 2 for j in range(len(metrics))], metrics)
    top = max(r[m] or 0.0 for r in rows for m in metrics)
    ax.set_ylim(0.5, min(1.0, top + 0.08))
    for container in ax.containers:
        ax.bar_label(container, fmt="%.3f", fontsize=7)
    ax.set_ylabel("test AUC")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    from data.dataset import load_dataset
    from data.prepare import prepare
    from data.summary import format_summary, summarize
    from data.synth import SynthConfig, synthesize
    from recsys.config import load_train_config
    from recsys.runs.rundir import atomic_write_json
    from recsys.runs.selection import select

    root = args.dir.resolve()
    world = root / "world"
    if not (world / "dataset.toml").is_file():
        synthesize(world, SynthConfig(seed=args.seed), progress=True, overwrite=True)
    dataset = load_dataset(world)
    print(format_summary(summarize(dataset, prepare(dataset, load_train_config("em3").prepare_config()))))
    uri = f"sqlite:///{root / 'mlflow.db'}"
    results = {p: _train_or_reuse(p, world, root / "runs" / p, uri, args.seed, args.overrides, args.fresh)
               for p in PRESETS}
    label = dataset.primary_label
    rows = comparison_rows(results, label)
    _print_table(rows, label)
    decision = select(MODEL_NAME, metric=f"labels.{label}.auc", tracking_uri=uri)
    for d in decision["decisions"]:
        gain = "" if d.get("gain") is None else (
            f": gain {d['gain']:+.4f}, 95% CI [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}], p={d['p_value']:.3g}")
        print(f"selection: version {d['version']} {d['decision']}{gain}")
    print(f"champion for the A/B test: version {decision['champion_after']} of '{MODEL_NAME}'")
    atomic_write_json(root / "comparison.json", {"label": label, "rows": rows, "selection": decision})
    _plot(rows, root / "comparison.png")
    print(f"\nwrote {root / 'comparison.json'} and {root / 'comparison.png'}; browse the runs with\n"
          f"  .venv/bin/mlflow ui --backend-store-uri {uri}")
    return 0
