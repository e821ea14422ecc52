"""Evaluation plots of a run directory (PNG, matplotlib's Agg backend: no display needed).

``make_plots(run_dir)`` writes into ``RUN_DIR/plots/``:

- ``roc.png``: ROC curve per label head and per retention head (uncensored rows);
- ``calibration.png``: mean predicted probability vs observed rate in 10 equal-width bins;
- ``training_curves.png``: train loss and the primary label's valid AUC/GAUC per epoch;
- ``cold_vs_warm.png``: AUC on cold vs warm items and users per label head.

A plot whose inputs are absent (no history, no cold flags) is skipped, not drawn empty.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: training machines have no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from recsys.evaluation.metrics import auc  # noqa: E402
from recsys.runs import rundir  # noqa: E402

N_BINS = 10


def _heads(df: pl.DataFrame, labels: list[str]) -> list[str]:
    heads = [lb for lb in labels if lb in df.columns and f"pred_{lb}" in df.columns]
    heads += [h for h in rundir.RETENTION_TRUTHS if h in df.columns and f"pred_{h}" in df.columns]
    return heads


def _truth_pred(df: pl.DataFrame, head: str) -> tuple[np.ndarray, np.ndarray]:
    sub = df.filter(pl.col(head).is_not_null() & pl.col(f"pred_{head}").is_not_null())
    return sub[head].to_numpy().astype(bool), sub[f"pred_{head}"].to_numpy()


def plot_roc(df: pl.DataFrame, heads: list[str], path: Path) -> Path | None:
    fig, ax = plt.subplots(figsize=(5, 5))
    drawn = 0
    for head in heads:
        y, p = _truth_pred(df, head)
        value = auc(y, p)
        if value is None:
            continue  # one class: no ROC curve exists
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=f"{head} (AUC {value:.4f})")
        drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def calibration_table(y: np.ndarray, p: np.ndarray, bins: int = N_BINS) -> pl.DataFrame:
    """Per equal-width probability bin: rows, mean prediction and observed positive rate."""
    b = np.minimum((p * bins).astype(np.int64), bins - 1)
    return (pl.DataFrame({"bin": b, "y": y.astype(np.float64), "p": p.astype(np.float64)})
            .group_by("bin").agg(pl.len().alias("rows"), pl.col("p").mean().alias("mean_pred"),
                                 pl.col("y").mean().alias("observed"))
            .sort("bin"))


def plot_calibration(df: pl.DataFrame, heads: list[str], path: Path) -> Path | None:
    if not heads:
        return None
    fig, ax = plt.subplots(figsize=(5, 5))
    for head in heads:
        y, p = _truth_pred(df, head)
        if y.size:
            t = calibration_table(y, p)
            ax.plot(t["mean_pred"], t["observed"], marker="o", ms=3, label=head)
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
    ax.set(xlabel="mean predicted probability", ylabel="observed rate",
           title=f"calibration ({N_BINS} bins)", xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_training_curves(history: list[dict], primary: str | None, path: Path) -> Path | None:
    if not history:
        return None
    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    loss = [h.get("train_loss") for h in history]
    ax1.plot(epochs, [np.nan if v is None else v for v in loss], marker="o")
    ax1.set(xlabel="epoch", ylabel="train loss", title="training loss")
    for name in ("auc", "gauc"):
        values = [((h.get("valid") or {}).get("labels", {}).get(primary) or {}).get(name)
                  for h in history]
        if any(v is not None for v in values):
            ax2.plot(epochs, [np.nan if v is None else v for v in values], marker="o",
                     label=f"valid {name}")
    ax2.set(xlabel="epoch", title=f"validation ({primary})")
    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if ax2.lines:
        ax2.legend(fontsize=8)
    return _save(fig, path)


def cold_warm_aucs(df: pl.DataFrame, labels: list[str]) -> list[dict]:
    """Rows of (label, slice, rows, auc) for cold/warm items and users; auc None if undefined."""
    out = []
    for label in labels:
        y, p = _truth_pred(df, label) if label in df.columns else (None, None)
        if y is None:
            continue
        sub = df.filter(pl.col(label).is_not_null() & pl.col(f"pred_{label}").is_not_null())
        for flag in ("cold_item", "cold_user"):
            if flag not in sub.columns:
                continue
            cold = sub[flag].fill_null(False).to_numpy()
            kind = flag.split("_")[1]
            for name, mask in ((f"cold {kind}", cold), (f"warm {kind}", ~cold)):
                out.append({"label": label, "slice": name, "rows": int(mask.sum()),
                            "auc": auc(y[mask], p[mask])})
    return out


def plot_cold_warm(df: pl.DataFrame, labels: list[str], path: Path) -> Path | None:
    rows = cold_warm_aucs(df, labels)
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(rows)), 4))
    xs = np.arange(len(rows))
    values = [r["auc"] if r["auc"] is not None else 0.0 for r in rows]
    ax.bar(xs, values, color=["tab:blue" if "cold" in r["slice"] else "tab:orange" for r in rows])
    for x, r in zip(xs, rows, strict=True):
        text = "n/a" if r["auc"] is None else f"{r['auc']:.3f}"
        ax.text(x, values[x] + 0.01, f"{text}\n{r['rows']} rows", ha="center", fontsize=7)
    ax.set_xticks(xs, [f"{r['label']}\n{r['slice']}" for r in rows], fontsize=7)
    ax.set(ylabel="AUC", ylim=(0, 1.15), title="cold vs warm")
    return _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)  # figures are global state in pyplot: close or leak
    return path


def make_plots(run_dir: str | Path, split: str | None = None) -> list[Path]:
    """Writes the plots of a run directory and returns their paths.

    ``split`` defaults to the split of ``metrics.json`` (else ``test``).
    """
    run = rundir.read_run(run_dir)
    split = split or (run.metrics or {}).get("split", "test")
    labels = run.labels
    out_dir = run.plots_dir
    made = [plot_training_curves(run.history, labels[0] if labels else None,
                                 out_dir / "training_curves.png")]
    if split in run.predictions:
        df = pl.read_parquet(run.predictions[split])
        labels = labels or rundir.prediction_labels(df)
        heads = _heads(df, labels)
        made += [plot_roc(df, heads, out_dir / "roc.png"),
                 plot_calibration(df, heads, out_dir / "calibration.png"),
                 plot_cold_warm(df, labels, out_dir / "cold_vs_warm.png")]
    return [p for p in made if p is not None]
