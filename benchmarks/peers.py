"""Side by side with FuxiCTR: our ``id_only`` preset vs FuxiCTR's ``model_zoo`` DIN (DESIGN §8).

Same data, same machine, same run:

1. FuxiCTR is installed from PyPI into its own virtual environment ``.venv-peers`` (CPU torch
   first, DESIGN §6; once, recorded in a stamp file). No FuxiCTR code lives in this repo.
2. Each dataset is prepared by OUR pipeline (``prepare`` with the ``id_only`` preset's
   ``PrepareConfig``) and exported for FuxiCTR: the same train/valid/test rows, the same
   categorical features (user id, ``user_*``, ``item_*``, ``ctx_*`` — our vocabulary indices,
   built on train, OOV included), the same target item and the same behaviour sequences (the
   user's positives strictly before the row, last L kept), in the layout of FuxiCTR's
   ``LongCTRDataLoader`` (per-row ``user_index``/``item_index``/``seq_len``, a per-user
   ``full_item_seq`` table and an item table). The export checks, row by row, that the
   sequence FuxiCTR will rebuild equals our ``hist_rows``.
3. Ours trains in a subprocess (``recsys.train.train`` on the preset); FuxiCTR's DIN trains in
   a subprocess of ``.venv-peers/bin/python`` (``benchmarks/peers_fuxictr_worker.py``, FuxiCTR's
   own ``fit`` loop). Both: same epochs, batch size, embedding width and MLP sizes, same seed
   and torch thread count; each process reports its training samples/s per epoch (validation
   excluded) and its own peak RSS. The throughput compared is the median of the epochs after
   the first (``steady_samples_per_s``); the first epoch, with each library's start-up in it
   (our tower's compilation), is reported on its own.
4. Test AUC and GAUC of both are computed here by ``recsys.metrics`` on the two prediction
   files, on the same rows with the same user grouping.

    python benchmarks/peers.py                      # synthetic world + MovieLens if present
    python benchmarks/peers.py --dataset synth --seeds 3
"""

from __future__ import annotations

import argparse
import json
import os
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
from benchmarks.peers_report import (  # noqa: E402
    COLUMNS,
    OURS,
    OURS_NO_RETENTION,
    recollect,
    summarise,
)

PEER_VENV = ROOT / ".venv-peers"
WORKER = Path(__file__).resolve().parent / "peers_fuxictr_worker.py"
TORCH_VERSION = "2.13.0"
FUXICTR_VERSION = "2.3.10"  # the newest on PyPI when written; its wheel ships model_zoo/LongCTR
# The project's shared data folder sits beside the repository (never copied into it).
MOVIELENS_SRC = ROOT.parent / "shared" / "data" / "movielens-small"


# ---- the peer environment -------------------------------------------------------------------
def _pip(python: Path, *args: str) -> None:
    subprocess.run([str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q",
                    *args], check=True)


def ensure_peer_env(venv: Path = PEER_VENV) -> Path:
    """Creates ``venv`` with CPU torch and FuxiCTR (once); returns its python.

    torch goes in first (``torch==2.13.0`` is the CPU wheel on these machines, DESIGN §6), then
    FuxiCTR with torch pinned by a constraints file, so nothing can swap in a CUDA torch.
    FuxiCTR 2.3.10 declares no torch dependency; its real dependencies (pandas, polars, pyarrow,
    scikit-learn, h5py, ray[data], ...) install from its metadata as they are.
    """
    python = venv / "bin" / "python"
    stamp = venv / ".peers-stamp"
    want = f"torch=={TORCH_VERSION} fuxictr=={FUXICTR_VERSION}\n"
    if python.is_file() and stamp.is_file() and stamp.read_text() == want:
        return python
    print(f"setting up {venv} ({want.strip()}) ...", flush=True)
    interpreter = shutil.which("python3.11") or sys.executable
    subprocess.run([interpreter, "-m", "venv", "--clear", str(venv)], check=True)
    _pip(python, f"torch=={TORCH_VERSION}")
    constraints = venv / "constraints.txt"
    installed_torch = subprocess.run(
        [str(python), "-c", "import torch; print(torch.__version__)"],
        check=True, capture_output=True, text=True).stdout.strip()
    constraints.write_text(f"torch=={installed_torch}\n")
    _pip(python, "-c", str(constraints), f"fuxictr=={FUXICTR_VERSION}")
    check = subprocess.run(
        [str(python), "-c", "import torch, fuxictr, model_zoo.LongCTR.DIN; "
         "print(torch.__version__, torch.version.cuda, fuxictr.__version__)"],
        check=True, capture_output=True, text=True).stdout.split()
    if check[1] != "None":
        raise SystemExit(f"{venv}: pip installed a CUDA torch ({check[0]}); remove the venv and "
                         "install the CPU wheel (DESIGN §6)")
    stamp.write_text(want)
    print(f"{venv}: torch {check[0]}, fuxictr {check[2]}", flush=True)
    return python


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
    from recsys.rundir import read_history
    from recsys.train import train

    cfg = load_train_config(PRESET, [f'data.dir="{data_dir}"', "tracking.enabled=false",
                                     f"train.threads={threads}", f"train.seed={seed}",
                                     f"train.epochs={epochs}", *filter(None, extra.split(";"))])
    started = time.perf_counter()
    metrics = train(cfg, run_dir, preset=PRESET, progress=False)
    total = time.perf_counter() - started
    history = read_history(run_dir)
    label = next(iter(metrics["labels"]))  # labels are in layout order: the primary first
    Path(result).write_text(json.dumps({
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


def run_fuxictr(python: Path, export: Path, meta: dict[str, Any], work: Path, seed: int,
                epochs: int, threads: int, num_workers: int) -> tuple[dict[str, Any], np.ndarray]:
    from recsys.config import load_train_config

    cfg = load_train_config(PRESET)
    r = cfg.ranking
    dataset_id = f"fuxictr_{seed}"
    job = {
        "data_dir": str(export), "data_root": str(work), "dataset_id": dataset_id,
        "threads": threads, "feature_cols": meta["feature_cols"], "label_col": meta["label_col"],
        "result": str(work / f"fuxictr_{seed}.json"),
        "predictions": str(work / f"fuxictr_{seed}_test.parquet"),
        # Sizes as ours (ranking/config.py + the preset); the rest is FuxiCTR's DIN template
        # (model_zoo/LongCTR/config/din_config): Dice attention unit, ReLU tower, Adam.
        "params": {
            "model": "DIN", "model_root": str(work / "fuxictr_checkpoints"),
            "task": "binary_classification", "loss": "binary_crossentropy",
            "metrics": ["AUC", "logloss"], "optimizer": "adam",
            "learning_rate": r.dense_lr, "embedding_regularizer": 0, "net_regularizer": 0,
            "embedding_dim": r.embedding_dim,
            "attention_hidden_units": list(r.attention_hidden),
            "attention_hidden_activations": "Dice", "attention_output_activation": None,
            "attention_dropout": r.dropout, "din_use_softmax": r.attention_softmax,
            "dnn_hidden_units": list(r.over_arch), "dnn_activations": "ReLU",
            "net_dropout": r.dropout, "batch_norm": False,
            "batch_size": cfg.train.batch_size, "epochs": epochs, "shuffle": True, "seed": seed,
            "monitor": cfg.train.early_stop_metric.upper(), "monitor_mode": "max",
            # ours stops after patience + 1 epochs without improvement; FuxiCTR after patience
            "early_stop_patience": cfg.train.patience + 1, "save_best_only": True,
            "eval_steps": None, "max_len": meta["max_len"], "padding": "pre",
            "accumulation_steps": 1, "num_workers": num_workers, "group_id": None,
            "use_features": None, "feature_specs": None, "feature_config": None,
            "pickle_feature_encoder": True, "debug_mode": False,
        },
    }
    job_path = work / f"fuxictr_{seed}_job.json"
    job_path.write_text(json.dumps(job, indent=2))
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    subprocess.run([str(python), str(WORKER), str(job_path)], check=True, cwd=work, env=env)
    result = json.loads(Path(job["result"]).read_text())
    probs = pl.read_parquet(job["predictions"])["prob"].to_numpy()
    return result, probs


# ---- one dataset ----------------------------------------------------------------------------
def _quality(y: np.ndarray, p: np.ndarray, groups: np.ndarray,
             cold: np.ndarray) -> tuple[float, float, float | None]:
    """(AUC, GAUC, cold-item AUC) of the same test rows, with our metric code for both sides."""
    from recsys.metrics import auc, gauc

    return auc(y, p), gauc(y, p, groups)[0], auc(y[cold], p[cold]) if cold.any() else None


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
         test: dict[str, np.ndarray]) -> dict[str, Any]:
    a, g, cold = _quality(test["y"], p, test["user_key"], test["cold_item"])
    rates = [e["samples_per_s"] for e in result["epochs"]]
    return {"model": model, "dataset": name, "seed": seed, "test_auc": round(a, 4),
            "gauc": round(g, 4), "auc_cold_item": None if cold is None else round(cold, 4),
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


def bench_dataset(name: str, python: Path, workdir: Path, seeds: int, epochs: int, threads: int,
                  num_workers: int, ablation: bool) -> list[dict[str, Any]]:
    data_dir = make_dataset(name, workdir / "data")
    if data_dir is None:
        return []
    export = workdir / f"export_{name}"
    meta = export_for_fuxictr(data_dir, export)
    test = meta["test"]
    print(f"{name}: rows {meta['rows']}, features {meta['features']}", flush=True)
    work = workdir / f"runs_{name}"
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in range(seeds):
        print(f"{name} seed {seed}: training ours ({PRESET}) ...", flush=True)
        ours, preds = run_ours(data_dir, work, seed, epochs, threads)
        rows.append(_row(OURS, name, seed, ours, _ours_probs(preds, test, meta["label"]), test))
        print(f"{name} seed {seed}: training FuxiCTR DIN ...", flush=True)
        theirs, p_theirs = run_fuxictr(python, export, meta, work, seed, epochs, threads,
                                       num_workers)
        if len(p_theirs) != len(test["y"]):
            raise AssertionError("FuxiCTR scored a different number of test rows")
        rows.append(_row(f"FuxiCTR {theirs['fuxictr_version']} DIN", name, seed, theirs,
                         p_theirs, test))
        rows[-1]["fuxictr_own_test_auc"] = round(theirs["fuxictr_test_metrics"].get("AUC", 0), 4)
        rows[-1]["parameters"] = theirs["parameters"]
        if ablation:
            print(f"{name} seed {seed}: training ours without retention heads ...", flush=True)
            abl, preds = run_ours(data_dir, work, seed, epochs, threads, NO_RETENTION, "noret")
            rows.append(_row(OURS_NO_RETENTION, name, seed, abl,
                             _ours_probs(preds, test, meta["label"]), test))
    return rows


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
    ap.add_argument("--no-write", action="store_true", help="print only, leave results alone")
    ap.add_argument("--collect-only", action="store_true",
                    help="train nothing: recompute the means and targets of the recorded "
                         "results/peers.json (e.g. after quality.json changed the em3 rows)")
    args = ap.parse_args(argv)
    if args.collect_only:
        recollect()
        return

    from recsys.config import load_train_config

    epochs = args.epochs or load_train_config(PRESET).train.epochs
    python = ensure_peer_env()
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
    try:
        for name in datasets:
            rows += bench_dataset(name, python, workdir, args.seeds, epochs, args.threads,
                                  args.num_workers, not args.no_ablation)
    finally:
        if tmp is not None:
            tmp.cleanup()
    means, targets = summarise(rows)
    print()
    print_table(rows, COLUMNS[:2] + ["seed"] + COLUMNS[2:] + ["epochs"])
    print(f"\nmeans over {args.seeds} seed(s):")
    print_table(means, COLUMNS)
    print()
    print_table(targets)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    if not args.no_write and rows:
        cmd = " ".join(["python benchmarks/peers.py", *(sys.argv[1:] if argv is None else argv)])
        path = write_results("peers", rows, targets, cmd, extra={"setup": {
            "peer": f"fuxictr=={FUXICTR_VERSION} (PyPI) + torch=={TORCH_VERSION} CPU in "
                    ".venv-peers", "preset": PRESET, "epochs": epochs,
            "threads": args.threads, "fuxictr_num_workers": args.num_workers,
            "seeds": args.seeds, "precision": precision_note()}, "summary": means})
        print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
