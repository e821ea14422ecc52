"""Within-user ranking (GAUC) of ``id_only`` on MovieLens: one factor at a time, then combined.

    python benchmarks/gauc_diagnosis.py [--configs base sparse_lr_0.01 ...] [--seeds 0 1]

Each configuration is the ``id_only`` preset plus ``--set`` overrides (``CONFIGS``), trained
through ``recsys train`` in its own process (one torch thread, tracking off) on the MovieLens
contract dataset that ``benchmarks/quality.py`` builds (``benchmarks/.data/movielens``).
Finished runs are kept in ``benchmarks/.data/gauc/<config>-s<seed>`` and reused. For every
run it reads the validation metrics of the kept (best) epoch from ``history.jsonl`` and the
test metrics from ``metrics.json`` (AUC, GAUC, logloss of the primary label), prints mean ±
std over seeds per configuration and writes ``benchmarks/results/gauc_diagnosis.json``.
``--mechanism`` adds the diagnostics of docs/ranking.md ("Within-user ranking"): the share of
the test score variance that lies within users, and reference scorers without a model.
Configurations are chosen on validation GAUC, never on test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import print_table, write_results  # noqa: E402
from benchmarks.quality import WORK, dataset_dir, run_seconds  # noqa: E402

RUNS = WORK / "gauc"
PRESET = "id_only"
# Applied to every run: no checkpoint every 100 steps (the epoch-end and best checkpoints stay;
# the results do not depend on it) and one intra-op thread.
COMMON = ["train.checkpoint_every=0", "train.threads=1"]
LONG = ["train.epochs=8", "train.patience=2"]
ADAM_TABLES = ('ranking.table_sharding={user={sharding_type="data_parallel"}, '
               'item_year={sharding_type="data_parallel"}}')
# name -> overrides of the id_only preset. One factor at a time from the preset, then the
# combinations of the factors that helped on validation GAUC.
CONFIGS: dict[str, list[str]] = {
    "base": [],
    # how the item (and every other) embedding table learns: fused row-wise Adagrad, lr 0.05
    "sparse_lr_0.005": ["ranking.sparse_lr=0.005"],
    "sparse_lr_0.01": ["ranking.sparse_lr=0.01"],
    "sparse_lr_0.02": ["ranking.sparse_lr=0.02"],
    "sparse_lr_0.1": ["ranking.sparse_lr=0.1"],
    "sparse_adagrad": ["ranking.sparse_optimizer=adagrad"],
    "sparse_adagrad_lr_0.01": ["ranking.sparse_optimizer=adagrad", "ranking.sparse_lr=0.01"],
    # the user and year tables data-parallel: trained by the dense Adam (lr 1e-3), as FuxiCTR
    # trains every table; the item table (an EmbeddingCollection) cannot be on CPU
    "user_year_tables_adam": [ADAM_TABLES],
    "dense_lr_3e-4": ["ranking.dense_lr=3e-4"],
    "dense_lr_3e-3": ["ranking.dense_lr=3e-3"],
    # how long it trains and what early stopping watches
    "epochs_8_patience_2": LONG,
    "stop_on_gauc": ["train.early_stop_metric=gauc"],
    "stop_on_gauc_epochs_8": ["train.early_stop_metric=gauc", *LONG],
    # ID dropout, the prior offset and the prior-rate features
    "item_id_dropout_0": ["ranking.item_id_dropout=0.0"],
    "user_id_dropout_0": ["ranking.user_id_dropout=0.0"],
    "no_prior_offset": ["ranking.prior_offset=false"],
    "no_prior_rate": ["data.prior_rate=false"],
    # width, regularisation, batch
    "embedding_dim_8": ["ranking.embedding_dim=8"],
    "embedding_dim_32": ["ranking.embedding_dim=32"],
    "embedding_dim_64": ["ranking.embedding_dim=64"],
    "dropout_0.1": ["ranking.dropout=0.1"],
    "dropout_0.3": ["ranking.dropout=0.3"],
    "batch_256": ["train.batch_size=256"],
    "batch_2048": ["train.batch_size=2048"],
    # combinations of what helped validation GAUC on its own
    "lr_0.01+item_drop_0": ["ranking.sparse_lr=0.01", "ranking.item_id_dropout=0.0"],
    "lr_0.01+item_drop_0+stop_gauc": ["ranking.sparse_lr=0.01", "ranking.item_id_dropout=0.0",
                                      "train.early_stop_metric=gauc", *LONG],
}
METRICS = ("auc", "gauc", "logloss")


def train_once(data: Path, name: str, seed: int) -> Path:
    """Trains configuration ``name`` with ``seed`` unless its run finished; returns the run dir."""
    run_dir = RUNS / f"{name}-s{seed}"
    if not (run_dir / "metrics.json").is_file():
        args = [sys.executable, "-m", "recsys", "train", PRESET, "--data", str(data), "--out",
                str(run_dir), "--no-track", "--quiet", "--set", f"train.seed={seed}"]
        if (run_dir / "run.json").is_file():  # an interrupted run: continue it
            args.append("--resume")
        for o in [*COMMON, *CONFIGS[name]]:
            args += ["--set", o]
        proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{name} seed {seed} failed:\n{proc.stderr[-3000:]}")
    return run_dir


def read_run(name: str, seed: int, run_dir: Path) -> dict:
    """Validation metrics of the kept epoch, test metrics, and the validation curve."""
    from recsys.runs.rundir import read_history

    test = json.loads((run_dir / "metrics.json").read_text())
    label = next(iter(test["labels"]))
    history = read_history(run_dir)
    best = test["best_epoch"]
    valid = history[best - 1]["valid"]["labels"][label]
    row = {"config": name, "seed": seed, "label": label, "best_epoch": best,
           "epochs_run": len(history), "seconds": run_seconds(run_dir)}
    for k in METRICS:
        row[f"valid_{k}"] = valid[k]
        row[f"test_{k}"] = test["labels"][label][k]
    row["valid_auc_by_epoch"] = [round(r["valid"]["labels"][label]["auc"], 4) for r in history]
    row["valid_gauc_by_epoch"] = [round(r["valid"]["labels"][label]["gauc"], 4) for r in history]
    return row


def summarise(name: str, runs: list[dict]) -> dict:
    """Mean and std (over seeds) of each metric of one configuration."""
    row = {"config": name, "overrides": CONFIGS[name], "seeds": len(runs),
           "best_epochs": [r["best_epoch"] for r in runs]}
    for split in ("valid", "test"):
        for k in METRICS:
            values = [r[f"{split}_{k}"] for r in runs]
            row[f"{split}_{k}"] = statistics.fmean(values)
            row[f"{split}_{k}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return row


def within_user_share(run_dir: Path, label: str) -> dict:
    """How the test logits of a run split into between-user and within-user variance, and the
    within-user standard deviation (what GAUC ranks on)."""
    import numpy as np
    import polars as pl

    preds = pl.read_parquet(run_dir / "predictions" / "test.parquet")
    p = preds[f"pred_{label}"].cast(pl.Float64).clip(1e-7, 1 - 1e-7)
    frame = preds.select("user_id").with_columns((p / (1 - p)).log().alias("z"))
    frame = frame.with_columns(pl.col("z").mean().over("user_id").alias("zu"))
    total = float(frame["z"].var(ddof=0))
    within = float(((frame["z"] - frame["zu"]) ** 2).mean())
    sd_within = frame.group_by("user_id").agg(pl.col("z").std(ddof=0).alias("s"), pl.len())
    sd = float(np.average(sd_within["s"].to_numpy(), weights=sd_within["len"].to_numpy()))
    return {"logit_var": total, "within_user_share": within / total, "within_user_sd": sd}


def reference_scorers(data: Path) -> list[dict]:
    """GAUC/AUC on valid and test of scorers without a model: the user's prior rate (what the
    prior-rate features carry), and the item's smoothed like rate on train (what an item
    embedding can learn for within-user ranking; cold items get the global rate)."""
    import polars as pl

    from data.dataset import load_dataset
    from data.prepare import prepare
    from recsys.config import load_train_config
    from recsys.evaluation.metrics import compute_metrics

    cfg = load_train_config(PRESET)
    prepared = prepare(load_dataset(data, allow_missing_media=True), cfg.prepare_config())
    label = prepared.layout.labels[0]
    frame = prepared.frame
    train = frame.filter(pl.col("split") == "train")
    rate, k = float(train[label].mean()), 10.0
    item = train.group_by("item_id").agg(
        ((pl.col(label).sum() + k * rate) / (pl.len() + k)).alias("_item"))
    frame = frame.join(item, on="item_id", how="left").with_columns(
        pl.col("_item").fill_null(rate),
        (1 / (1 + (-pl.col("prior_logit")).exp())).alias("_prior"))
    # user rate x item lift: the two main effects together, no interaction
    frame = frame.with_columns((pl.col("_prior") * pl.col("_item") / rate).clip(0, 1).alias("_both"))
    out = []
    for scorer, column in (("prior rate alone", "_prior"), ("item like rate on train", "_item"),
                           ("prior rate x item lift", "_both")):
        row = {"scorer": scorer}
        for split in ("valid", "test"):
            part = frame.filter(pl.col("split") == split).with_columns(
                pl.col(column).alias(f"pred_{label}"))
            m = compute_metrics(part, [label], split)["labels"][label]
            row[f"{split}_auc"], row[f"{split}_gauc"] = m["auc"], m["gauc"]
        out.append(row)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--finished-only", action="store_true",
                        help="train nothing: report the runs of these configs and seeds that "
                             "have finished")
    parser.add_argument("--mechanism", action="store_true",
                        help="also the within-user variance of every run and the reference "
                             "scorers without a model")
    args = parser.parse_args()

    data = dataset_dir("movielens")
    if data is None:
        return 0
    runs: dict[str, list[dict]] = {}
    for seed in args.seeds:  # seed outer: a partial sweep already covers every configuration
        for name in args.configs:
            run_dir = RUNS / f"{name}-s{seed}"
            if args.finished_only and not (run_dir / "metrics.json").is_file():
                continue
            run_dir = train_once(data, name, seed)
            r = read_run(name, seed, run_dir)
            if args.mechanism:
                r.update(within_user_share(run_dir, r["label"]))
            runs.setdefault(name, []).append(r)
            print(f"{name} seed {seed}: epoch {r['best_epoch']}/{r['epochs_run']}, valid auc "
                  f"{r['valid_auc']:.4f} gauc {r['valid_gauc']:.4f}, test auc {r['test_auc']:.4f} "
                  f"gauc {r['test_gauc']:.4f} logloss {r['test_logloss']:.4f}", flush=True)
    rows = [summarise(name, runs[name]) for name in args.configs if name in runs]
    print_table(rows, ["config", "seeds", "valid_auc", "valid_gauc", "valid_gauc_std", "test_auc",
                       "test_gauc", "test_gauc_std", "test_logloss", "best_epochs"])
    extra = {"preset": PRESET, "common_overrides": COMMON, "runs": runs}
    if args.mechanism:
        extra["reference_scorers"] = reference_scorers(data)
        print_table(extra["reference_scorers"])
    command = " ".join(["python benchmarks/gauc_diagnosis.py", *sys.argv[1:]]).strip()
    path = write_results("gauc_diagnosis", rows, [], command, extra)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
