"""Where ``benchmarks/quality.py`` keeps its datasets and runs, and what each row of its table
trains: the rows' names, run directories, reuse of finished runs, and the checks that a
reused run (or a recorded row) was trained on exactly the data prepared now.
"""

from __future__ import annotations

import functools
import hashlib
import json
import statistics
import subprocess
import sys
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

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


def target_key(row: str) -> str:
    """``em3`` → ``em3``; a ``PRETRAINED`` row → ``<preset>_<encoder>`` (``em3_minilm``)."""
    return run_stem(row).replace("+", "_")


@functools.cache
def prepared_fingerprint(data: Path) -> str:
    """The fingerprint of a dataset ``dataset_dir`` has prepared in this process, hashed once
    (every run and row of it is checked against it)."""
    from data.dataset import dataset_fingerprint

    return dataset_fingerprint(data)


def still_current(row: dict, data: Path | None, overrides: list[str]) -> bool:
    """Whether a recorded row may stay in the results: its dataset was not prepared in this
    invocation (``data`` None: kept as recorded), or every seed's run is here and was trained
    on exactly this data. A row of older data is dropped (and says so) rather than shown
    beside rows of the current data."""
    if data is None or row["preset"] in (SELECTED, PRIOR_ALONE):
        return True
    current = prepared_fingerprint(data)
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

    if not (run_dir / "run.json").is_file():
        return None
    trained_on = (json.loads((run_dir / "run.json").read_text()).get("dataset") or {}).get("fingerprint")
    if trained_on == prepared_fingerprint(data):
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

    from recsys.evaluation.metrics import compute_metrics

    recorded = json.loads((run_dir / "metrics.json").read_text())
    preds = pl.read_parquet(run_dir / "predictions" / "test.parquet")
    return compute_metrics(preds, list(recorded["labels"]), "test", recorded["throughput"])


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
