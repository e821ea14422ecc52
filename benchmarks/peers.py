"""Side by side with FuxiCTR: our ``id_only`` preset vs FuxiCTR's DNN, DeepFM and DIN (docs/design.md §8).

Same data, same machine, same run:

1. FuxiCTR is installed from PyPI into its own virtual environment ``.venv-peers`` (CPU torch
   first, docs/design.md §6; once, recorded in a stamp file). DIN comes with its wheel
   (``model_zoo/LongCTR``); DNN and DeepFM are in no PyPI release, so their ``model_zoo``
   files are taken once from a copy of the reczoo/FuxiCTR repository (``--model-zoo-source``),
   checked against pinned SHA-256 digests and kept under ``benchmarks/.data``
   (``benchmarks/peers_model_zoo.py``). No FuxiCTR code lives in this repo.
2. Each dataset is prepared by OUR pipeline (``prepare`` with the ``id_only`` preset's
   ``PrepareConfig``) and exported for FuxiCTR: the same train/valid/test rows, the same
   categorical features (user id, ``user_*``, ``item_*``, ``ctx_*`` — our vocabulary indices,
   built on train, OOV included; a multi-valued one as a FuxiCTR ``sequence`` feature,
   mean-pooled), the same target item and, for DIN, the same behaviour sequences (the user's
   positives strictly before the row, last L kept) in the layout of FuxiCTR's
   ``LongCTRDataLoader``; DNN and DeepFM read the same rows flat (no history), through
   FuxiCTR's ``NpzDataLoader``. The export checks, row by row, that the sequence FuxiCTR will
   rebuild equals our ``hist_rows``.
3. Ours trains in a subprocess (``recsys.training.train.train`` on the preset); each FuxiCTR model
   trains in a subprocess of ``.venv-peers/bin/python`` (``benchmarks/peers_fuxictr_worker.py``,
   FuxiCTR's own ``fit`` loop). All: same epochs, batch size, embedding width and MLP sizes,
   same seed and torch thread count; each process reports its training samples/s per epoch
   (validation excluded) and its own peak RSS. The throughput compared is the median of the
   epochs after the first (``steady_samples_per_s``); the first epoch, with each library's
   start-up in it (our tower's compilation), is reported on its own.
4. Test AUC, GAUC and logloss of every model are computed here by ``recsys.evaluation.metrics`` on the
   prediction files, on the same rows with the same user grouping. The best FuxiCTR model of a
   dataset is picked on validation GAUC, and ours − it is recorded with a paired bootstrap
   interval over test users of the seed ensembles (``benchmarks/peers_paired.py``).

    python benchmarks/peers.py                      # synthetic world + MovieLens if present
    python benchmarks/peers.py --dataset synth --seeds 3 --models DIN
    python benchmarks/peers.py --dataset synth --seeds 1 --epochs 1 --output /tmp/peers.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import print_table, write_results  # noqa: E402
from benchmarks.peers_export import PRESET, export_for_fuxictr  # noqa: E402
from benchmarks.peers_fuxictr import (  # noqa: E402
    FUXICTR_MODELS,
    FUXICTR_VERSION,
    TORCH_VERSION,
    ensure_peer_env,
    run_fuxictr,
)
from benchmarks.peers_model_zoo import COMMIT, ensure_model_zoo  # noqa: E402
from benchmarks.peers_paired import (  # noqa: E402
    best_on_valid,
    paired_interval,
    predictions_dir,
    save_predictions,
)
from benchmarks.peers_report import (  # noqa: E402
    COLUMNS,
    OURS,
    OURS_NO_RETENTION,
    recollect,
    summarise,
)

# The project's shared data folder sits beside the repository (never copied into it).
MOVIELENS_SRC = ROOT.parent / "shared" / "data" / "movielens-small"


# ---- data -----------------------------------------------------------------------------------
def make_dataset(name: str, workdir: Path) -> Path | None:
    """Writes dataset ``name`` under ``workdir``; None when its source is absent."""
    out = workdir / name
    if name == "synth":
        from data.synth import SynthConfig, synthesize

        synthesize(out, SynthConfig(), overwrite=True)
        return out
    if name == "movielens":
        if not (MOVIELENS_SRC / "ratings.csv").is_file():
            print(f"skipping movielens: {MOVIELENS_SRC} not found", flush=True)
            return None
        from data.adapters.movielens import prepare_movielens

        # ID-only models never read posters: leave them out (saves validating ~3k images).
        return prepare_movielens(MOVIELENS_SRC, out, posters=None, overwrite=True, log=None)
    raise ValueError(f"unknown dataset {name!r}")


def train_ours_worker(data_dir: str, run_dir: str, seed: int, epochs: int, threads: int,
                      result: str, extra: str = "") -> None:
    """Runs in its own process: trains the preset (plus the ``;``-separated overrides in
    ``extra``), writes throughput and peak RSS."""
    import resource

    from recsys.config import load_train_config
    from recsys.runs.rundir import read_history
    from recsys.training.train import train

    cfg = load_train_config(PRESET, [f'data.dir="{data_dir}"', "tracking.enabled=false",
                                     f"train.threads={threads}", f"train.seed={seed}",
                                     f"train.epochs={epochs}", *filter(None, extra.split(";"))])
    started = time.perf_counter()
    metrics = train(cfg, run_dir, preset=PRESET, progress=False)
    total = time.perf_counter() - started
    history = read_history(run_dir)
    label = next(iter(metrics["labels"]))  # labels are in layout order: the primary first
    best = metrics.get("best_epoch") or len(history)
    Path(result).write_text(json.dumps({
        "valid_gauc": history[best - 1]["valid"]["labels"][label]["gauc"],
        "epochs": [{"samples_per_s": r["samples_per_s"],
                    "valid": {"AUC": r["valid"]["labels"][label]["auc"]}} for r in history],
        "total_s": total, "best_epoch": metrics.get("best_epoch"),
        "own_test_metrics": metrics["labels"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }, indent=2))


def run_ours(data_dir: Path, work: Path, seed: int, epochs: int, threads: int,
             overrides: tuple[str, ...] = (), tag: str = "ours"
             ) -> tuple[dict[str, Any], pl.DataFrame]:
    run_dir, result = work / f"{tag}_run_{seed}", work / f"{tag}_{seed}.json"
    shutil.rmtree(run_dir, ignore_errors=True)  # a --workdir run again: start afresh
    code = ("import sys; sys.path.insert(0, sys.argv[1]); "
            "from benchmarks.peers import train_ours_worker as w; "
            "w(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), "
            "sys.argv[7], sys.argv[8])")
    subprocess.run([sys.executable, "-c", code, str(ROOT), str(data_dir), str(run_dir),
                    str(seed), str(epochs), str(threads), str(result), ";".join(overrides)],
                   check=True, cwd=work)
    preds = pl.read_parquet(run_dir / "predictions" / "test.parquet")
    return json.loads(result.read_text()), preds


# ---- one dataset ----------------------------------------------------------------------------
def _quality(y: np.ndarray, p: np.ndarray, groups: np.ndarray,
             cold: np.ndarray) -> tuple[float, float, float, float | None]:
    """(AUC, GAUC, logloss, cold-item AUC) of the same test rows, with our metric code for
    every model."""
    from recsys.evaluation.metrics import auc, gauc, logloss

    return (auc(y, p), gauc(y, p, groups)[0], logloss(y, p),
            auc(y[cold], p[cold]) if cold.any() else None)


NO_RETENTION = ("ranking.retention_heads=false",)


def precision_note() -> str:
    """What each side computes in: ours follows ``ranking.cpu_precision`` (the preset keeps
    ``"auto"``), FuxiCTR trains in float32."""
    from recsys.config import load_train_config

    ours = ("dense tower under bf16 autocast (this CPU has native bf16)"
            if load_train_config(PRESET).ranking_config().cpu_bf16 else "float32")
    return f"ours: {ours}; weights, optimizer state and heads float32. FuxiCTR: float32."


def steady_samples_per_s(epoch_rates: list[float]) -> float:
    """Training samples/s once warmed up: the median of the epochs after the first.

    The first epoch carries each library's one-off start-up (for ours: compiling the dense
    tower, seconds; for FuxiCTR: its first batches), so it is left out for both and reported
    on its own (``first_epoch_samples_per_s``). With one epoch there is nothing else.
    """
    return statistics.median(epoch_rates[1:] or epoch_rates)


def _row(model: str, name: str, seed: int, result: dict[str, Any], p: np.ndarray,
         test: dict[str, np.ndarray], valid_gauc: float | None = None) -> dict[str, Any]:
    a, g, loss, cold = _quality(test["y"], p, test["user_key"], test["cold_item"])
    rates = [e["samples_per_s"] for e in result["epochs"]]
    return {"model": model, "dataset": name, "seed": seed, "test_auc": round(a, 4),
            "gauc": round(g, 4), "logloss": round(loss, 4),
            "auc_cold_item": None if cold is None else round(cold, 4),
            "valid_gauc": None if valid_gauc is None else round(valid_gauc, 4),
            "train_samples_per_s": round(steady_samples_per_s(rates), 1),
            "first_epoch_samples_per_s": round(rates[0], 1),
            "peak_rss_mb": round(result["peak_rss_mb"], 1), "epochs": len(result["epochs"]),
            "epoch_samples_per_s": [round(r, 1) for r in rates],
            "epoch_valid_auc": [round(e["valid"]["AUC"], 4) if "valid" in e else None
                                for e in result["epochs"]],
            "process_s": round(result["total_s"], 1)}


def _ours_probs(preds: pl.DataFrame, test: dict[str, np.ndarray], label: str) -> np.ndarray:
    """Our test probabilities in the order of the exported test rows (joined on row_id)."""
    keyed = pl.DataFrame({"row_id": test["row_id"]}).join(
        preds, on="row_id", how="left", maintain_order="left")
    if keyed[f"pred_{label}"].null_count():
        raise AssertionError("our test predictions miss rows of the exported test split")
    return keyed[f"pred_{label}"].to_numpy()


def _valid_gauc(valid: dict[str, np.ndarray], p: np.ndarray) -> float:
    """GAUC of a FuxiCTR model's validation scores (our metric code, our user grouping)."""
    from recsys.evaluation.metrics import gauc

    if len(p) != len(valid["y"]):
        raise AssertionError("FuxiCTR scored a different number of validation rows")
    return gauc(valid["y"], p, valid["user_key"])[0]


def bench_dataset(name: str, python: Path, workdir: Path, seeds: int, epochs: int, threads: int,
                  num_workers: int, ablation: bool, models: tuple[str, ...] = FUXICTR_MODELS,
                  zoo: Path | None = None, overrides: tuple[str, ...] = (),
                  predictions: Path | None = None
                  ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Trains ours and each FuxiCTR model of ``models`` per seed on one dataset: (rows,
    ours − best FuxiCTR model with its paired interval, or None without FuxiCTR rows).
    ``overrides`` (``--set``) apply to our training and to the prepared data both libraries
    see. Each model's seed-ensemble test predictions are kept under ``predictions``
    (``PREDICTIONS`` by default)."""
    data_dir = make_dataset(name, workdir / "data")
    if data_dir is None:
        return [], None
    export = workdir / f"export_{name}"
    meta = export_for_fuxictr(data_dir, export, list(overrides))
    test = meta["test"]
    print(f"{name}: rows {meta['rows']}, features {meta['features']}, "
          f"bags {meta['bags'] or 'none'}", flush=True)
    work = workdir / f"runs_{name}"
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    probs: dict[str, list[np.ndarray]] = {}  # model -> test probabilities per seed
    for seed in range(seeds):
        print(f"{name} seed {seed}: training ours ({PRESET}) ...", flush=True)
        ours, preds = run_ours(data_dir, work, seed, epochs, threads, overrides)
        p_ours = _ours_probs(preds, test, meta["label"])
        probs.setdefault(OURS, []).append(p_ours)
        rows.append(_row(OURS, name, seed, ours, p_ours, test, ours["valid_gauc"]))
        for model in models:
            print(f"{name} seed {seed}: training FuxiCTR {model} ...", flush=True)
            theirs, p_theirs, p_valid = run_fuxictr(python, export, meta, work, seed, epochs,
                                                    threads, num_workers, model, zoo)
            if len(p_theirs) != len(test["y"]):
                raise AssertionError("FuxiCTR scored a different number of test rows")
            label = f"FuxiCTR {theirs['fuxictr_version']} {model}"
            probs.setdefault(label, []).append(p_theirs)
            rows.append(_row(label, name, seed, theirs, p_theirs, test,
                             _valid_gauc(meta["valid"], p_valid)))
            rows[-1]["fuxictr_own_test_auc"] = round(
                theirs["fuxictr_test_metrics"].get("AUC", 0), 4)
            rows[-1]["parameters"] = theirs["parameters"]
            rows[-1]["source"] = theirs["model"]
        if ablation:
            print(f"{name} seed {seed}: training ours without retention heads ...", flush=True)
            abl, preds = run_ours(data_dir, work, seed, epochs, threads,
                                  (*overrides, *NO_RETENTION), "noret")
            rows.append(_row(OURS_NO_RETENTION, name, seed, abl,
                             _ours_probs(preds, test, meta["label"]), test))
    best = best_on_valid(rows, name)
    save_predictions(predictions_dir(name, overrides, predictions), test, probs, rows, name, best)
    paired = None if best is None else paired_interval(
        meta["label"], test["y"], test["user_key"], probs[OURS], probs[best], best, OURS)
    return rows, paired


def parse_models(text: str) -> tuple[str, ...]:
    """``--models``: comma-separated FuxiCTR model names, in the order given."""
    models = tuple(m.strip() for m in text.split(",") if m.strip())
    unknown = [m for m in models if m not in FUXICTR_MODELS]
    if unknown or not models:
        raise argparse.ArgumentTypeError(
            f"unknown FuxiCTR model(s) {unknown or text!r}; choose from {','.join(FUXICTR_MODELS)}")
    return models


def write_output(path: Path, rows: list[dict[str, Any]], targets: list[dict[str, Any]],
                 command: str, extra: dict[str, Any]) -> Path:
    """``--output``: the same JSON as ``results/peers.json`` (docs/design.md §8), written elsewhere,
    e.g. for a smoke run that must not replace the recorded results."""
    import datetime as dt

    from benchmarks.common import machine

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"benchmark": "peers", "command": command, "machine": machine(),
                                "device": "cpu", "date": dt.date.today().isoformat(),
                                "rows": rows, "targets": targets, **extra}, indent=2) + "\n")
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=("synth", "movielens", "both"), default="both")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=None,
                    help="default: the preset's train.epochs")
    # One thread each: on the 2 shared cores of these machines two threads per trainer were
    # 10-20x slower for BOTH trainers (oversubscription), which would measure the neighbours.
    ap.add_argument("--threads", type=int, default=1, help="torch threads of each trainer")
    ap.add_argument("--num-workers", type=int, default=0,
                    help="FuxiCTR DataLoader worker processes (0 = load in the trainer)")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="keep data, exports and runs here (default: a temporary directory)")
    ap.add_argument("--no-ablation", action="store_true",
                    help="skip the diagnostic row: id_only with ranking.retention_heads=false")
    ap.add_argument("--models", type=parse_models, default=FUXICTR_MODELS,
                    help="comma-separated FuxiCTR models to train beside ours "
                         f"(default {','.join(FUXICTR_MODELS)})")
    ap.add_argument("--model-zoo-source", type=Path, default=None,
                    help="a copy of the reczoo/FuxiCTR repository (git repository, checkout, "
                         ".tar.gz or .zip) to take the pinned model_zoo DNN/DeepFM files from; "
                         "needed once, they are kept under benchmarks/.data")
    ap.add_argument("--output", type=Path, default=None,
                    help="write the results JSON here instead of benchmarks/results/peers.json")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="config override for our runs and the data both libraries see "
                         "(repeatable), e.g. --set data.split='\"user_time\"'; the results "
                         "then go to results/peers-set-<hash>.json")
    ap.add_argument("--no-write", action="store_true", help="print only, leave results alone")
    ap.add_argument("--collect-only", action="store_true",
                    help="train nothing: recompute the means and targets of the recorded "
                         "results/peers.json, or with --set of results/peers-set-<hash>.json (e.g. after "
                         "quality.json changed the em3 rows)")
    args = ap.parse_args(argv)
    if args.collect_only:
        recollect(args.overrides)
        return

    from recsys.config import load_train_config

    epochs = args.epochs or load_train_config(PRESET).train.epochs
    python = ensure_peer_env()
    # Checked before anything trains: a missing or different model_zoo copy fails at once.
    zoo = (ensure_model_zoo(args.model_zoo_source)
           if set(args.models) - {"DIN"} else None)
    datasets = ["synth", "movielens"] if args.dataset == "both" else [args.dataset]
    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="peers-")
        workdir = Path(tmp.name)
    else:
        workdir = args.workdir
        workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    paired: dict[str, Any] = {}
    try:
        for name in datasets:
            got, pair = bench_dataset(name, python, workdir, args.seeds, epochs, args.threads,
                                      args.num_workers, not args.no_ablation, args.models, zoo,
                                      tuple(args.overrides),
                                      # a run for another file keeps its predictions beside it
                                      None if args.output is None
                                      else args.output.parent / "predictions")
            rows += got
            if pair is not None:
                paired[name] = pair
    finally:
        if tmp is not None:
            tmp.cleanup()
    from benchmarks.quality_runs import overrides_key

    means, targets = summarise(rows, f"quality{overrides_key(args.overrides)}")
    print()
    print_table(rows, COLUMNS[:2] + ["seed"] + COLUMNS[2:] + ["epochs"])
    print(f"\nmeans over {args.seeds} seed(s):")
    print_table(means, COLUMNS)
    print()
    print_table(targets)
    for name, pair in paired.items():
        print(f"\n{name}: ours - {pair['champion']} (seed ensembles, paired bootstrap over "
              f"{pair['gauc']['users']} test users, 95%):")
        for kind in ("auc", "gauc", "logloss"):
            g = pair[kind]
            print(f"  {kind}: {g['gain']:+.4f} [{g['ci_low']:+.4f}, {g['ci_high']:+.4f}]")
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    if not args.no_write and rows:
        cmd = " ".join(["python benchmarks/peers.py", *(sys.argv[1:] if argv is None else argv)])
        extra = {"setup": {
            "peer": f"fuxictr=={FUXICTR_VERSION} (PyPI) + torch=={TORCH_VERSION} CPU in "
                    ".venv-peers", "models": list(args.models),
            "model_zoo": f"reczoo/FuxiCTR@{COMMIT} model_zoo/{{DNN,DeepFM}} (SHA-256 pinned in "
                         "benchmarks/peers_model_zoo.py)" if zoo else None,
            "preset": PRESET, "epochs": epochs,
            "threads": args.threads, "fuxictr_num_workers": args.num_workers,
            "seeds": args.seeds, "precision": precision_note()}, "summary": means,
            "paired": paired}
        if args.output is not None:
            path = write_output(args.output, rows, targets, cmd, extra)
        else:
            path = write_results(f"peers{overrides_key(args.overrides)}", rows, targets, cmd,
                                 extra=extra)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
