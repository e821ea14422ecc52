"""The paired comparisons of ``benchmarks/quality.py``: seed ensembles of two rows scored on the
same test rows, their gaps with 95% intervals (a paired bootstrap over test users,
``recsys.runs.selection_stats``, what ``recsys select`` decides with), the best ID model picked on
validation, and the real-data targets.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.common import target
from benchmarks.peers_paired import predictions_dir
from benchmarks.quality_runs import EM3_REAL, run_stem, runs_root

if TYPE_CHECKING:
    import polars as pl

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
    split with a 95% interval: a paired bootstrap over test users (``recsys.runs.selection_stats``,
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
    from recsys.runs.selection_stats import MetricSpec, paired_bootstrap

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


def kept_valid_gauc(run_dir: Path) -> float:
    """Validation GAUC of the primary label at the epoch the run kept (its best checkpoint)."""
    from recsys.runs.rundir import read_history

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
