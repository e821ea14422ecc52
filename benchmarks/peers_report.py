"""The report side of ``benchmarks/peers.py``: means over seeds, the issue's targets, the em3
reference rows read from ``results/quality.json``, and re-collecting a recorded ``peers.json``.
"""

from __future__ import annotations

import json
import statistics
from typing import Any

from benchmarks.common import RESULTS_DIR, print_table, target, write_results
from benchmarks.peers_paired import best_on_valid
from benchmarks.quality_runs import PRETRAINED, SELECTED, target_key

OURS = "ours: id_only (DIN + DCNv2, TorchRec)"
OURS_NO_RETENTION = "ours: id_only, retention_heads=false (ablation)"
AUC_MARGIN = 0.0  # ours at least as accurate: AUC(ours) - AUC(FuxiCTR DIN) >= 0
SPEEDUP = 1.5  # ours >= 1.5x FuxiCTR DIN's training samples/s
QUALITY_COLUMNS = ["test_auc", "gauc", "logloss", "auc_cold_item"]
# Measured for the FuxiCTR rows: what picks the best FuxiCTR model (benchmarks/peers_paired.py).
SELECTION_COLUMNS = ["valid_gauc"]
# Measured by training here; the em3 reference rows (read from quality.json) have none.
TRAINING_COLUMNS = ["train_samples_per_s", "first_epoch_samples_per_s", "peak_rss_mb"]
COLUMNS = ["model", "dataset", *QUALITY_COLUMNS, *TRAINING_COLUMNS]


def _mean(rows: list[dict[str, Any]], dataset: str, model: str, key: str) -> float | None:
    """Mean of ``key`` over the seeds of one model and dataset (None when none has it)."""
    values = [r[key] for r in rows if r["dataset"] == dataset and r["model"] == model
              and r.get(key) is not None]
    return statistics.fmean(values) if values else None


def best_peer_targets(rows: list[dict[str, Any]], dataset: str) -> list[dict[str, Any]]:
    """The side-by-side's step-2 targets: our ``id_only`` GAUC at least the best FuxiCTR
    model's (picked on validation GAUC), without giving up test AUC or logloss. None when
    no FuxiCTR row has a validation GAUC (results recorded before it was measured)."""
    best = best_on_valid(rows, dataset)
    if best is None or _mean(rows, dataset, OURS, "logloss") is None:
        return []
    note = f"best FuxiCTR model on mean validation GAUC: {best}"
    out = []
    for key, name, sign in (("gauc", "gauc_id_only_minus_best_fuxictr", 1),
                            ("test_auc", "test_auc_id_only_minus_best_fuxictr", 1),
                            ("logloss", "logloss_best_fuxictr_minus_id_only", -1)):
        gap = sign * (_mean(rows, dataset, OURS, key) - _mean(rows, dataset, best, key))
        out.append({**target(f"{name}_{dataset}", gap, ">=", 0.0), "note": note})
    return out


def targets_for(rows: list[dict[str, Any]], dataset: str,
                quality: str = "quality") -> list[dict[str, Any]]:
    """The issue's targets, means over seeds: ``id_only`` as shipped against FuxiCTR's DIN,
    ``em3`` (and its ``PRETRAINED`` rows) against both (from ``results/<quality>.json``, see
    ``em3_reference``), and ``id_only`` against the best FuxiCTR model (``best_peer_targets``).
    The DIN targets are left out of a run without DIN (``--models``)."""
    peer = next((r["model"] for r in rows if r["dataset"] == dataset
                 and r["model"].startswith("FuxiCTR") and r["model"].endswith(" DIN")), None)
    if peer is None:
        return best_peer_targets(rows, dataset)

    def mean(model: str, key: str) -> float:
        return statistics.fmean(r[key] for r in rows
                                if r["dataset"] == dataset and r["model"] == model)

    auc_gap = mean(OURS, "test_auc") - mean(peer, "test_auc")
    speedup = mean(OURS, "train_samples_per_s") / mean(peer, "train_samples_per_s")
    out = [target(f"test_auc_id_only_minus_fuxictr_din_{dataset}", auc_gap, ">=", AUC_MARGIN),
           target(f"train_samples_per_s_ratio_id_only_over_fuxictr_din_{dataset}", speedup,
                  ">=", SPEEDUP)]
    for preset in ("em3", *PRETRAINED):  # em3, and em3 with a pretrained text tower
        ref = em3_reference(dataset, preset, quality)
        if ref is None:
            continue
        for key, name in (("test_auc", "auc"), ("auc_cold_item", "auc_cold_item")):
            best = max(mean(OURS, key), mean(peer, key))
            out.append(target(f"{target_key(preset)}_minus_best_of_id_only_and_fuxictr_din_"
                              f"{name}_{dataset}", ref[key] - best, ">", 0.0))
    return out + best_peer_targets(rows, dataset)


def em3_reference(dataset: str, preset: str = "em3",
                  quality: str = "quality") -> dict[str, Any] | None:
    """``preset``'s mean test AUC / cold-item AUC from ``results/<quality>.json`` (None if
    absent). ``quality`` names the results of the same ``--set`` overrides as the peers run
    (``"quality" + quality_runs.overrides_key(overrides)``): rows of another split are never
    compared.

    Those runs use the same preparation (split, vocabularies, behaviour sequences) as this
    benchmark, hence the same test rows; MovieLens there also has its posters, which only the
    EM3 presets read. Training them here again would add ~25 minutes on 2 cores for the same
    numbers.
    """
    path = RESULTS_DIR / f"{quality}.json"
    if not path.is_file():
        return None
    for r in json.loads(path.read_text())["rows"]:
        if r["dataset"] == dataset and r["preset"] == preset:
            return {"model": f"ours: {preset} (benchmarks/quality.py, {r['seeds']} seeds)",
                    "dataset": dataset, "seeds": r["seeds"], "test_auc": round(r["auc"], 4),
                    "gauc": round(r["gauc"], 4), "auc_cold_item": round(r["auc_cold_item"], 4)}
    return None


# Shown beside em3 where quality.py has them: em3 with a pretrained text tower (MovieLens;
# targets of their own, like em3's), and per seed em3 or em3_frozen_seq, whichever validation
# AUC picks (benchmarks/quality.py, SELECTED; no target).
REFERENCE_VARIANTS = (*PRETRAINED, SELECTED)


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean (and min..max) over seeds per model and dataset."""
    out = []
    for key in dict.fromkeys((r["dataset"], r["model"]) for r in rows):
        group = [r for r in rows if (r["dataset"], r["model"]) == key]
        row: dict[str, Any] = {"dataset": key[0], "model": key[1], "seeds": len(group)}
        for col in QUALITY_COLUMNS + SELECTION_COLUMNS + TRAINING_COLUMNS:
            values = [r[col] for r in group if r.get(col) is not None]
            if not values:
                row[col] = None
                continue
            row[col] = round(statistics.fmean(values), 1 if col in TRAINING_COLUMNS else 4)
            if len(group) > 1:
                row[f"{col}_range"] = [min(values), max(values)]
        out.append(row)
    return out


def summarise(rows: list[dict[str, Any]], quality: str = "quality"
              ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(means per model and dataset, with the EM3 reference rows of ``results/<quality>.json``;
    targets per dataset)."""
    means = summary(rows)
    targets: list[dict[str, Any]] = []
    for name in dict.fromkeys(r["dataset"] for r in rows):
        targets += targets_for(rows, name, quality)
        for preset in ("em3", *REFERENCE_VARIANTS):
            ref = em3_reference(name, preset, quality)
            if ref is not None:  # a reference row: read from quality.json, not trained here
                means.append({**ref, **dict.fromkeys(TRAINING_COLUMNS)})
    return means, targets


def recollect(overrides: list[str] | None = None) -> None:
    """Recomputes the means and targets of the recorded ``results/peers.json`` (or of the
    ``--set`` ``overrides``' ``peers-set-<hash>.json``), its rows and paired intervals kept as
    recorded."""
    from benchmarks.quality_runs import overrides_key

    key = overrides_key(overrides or [])
    path = RESULTS_DIR / f"peers{key}.json"
    recorded = json.loads(path.read_text())
    means, targets = summarise(recorded["rows"], f"quality{key}")
    print_table(means, COLUMNS)
    print()
    print_table(targets)
    kept = {k: recorded[k] for k in ("paired",) if k in recorded}
    write_results(f"peers{key}", recorded["rows"], targets, recorded["command"],
                  extra={"setup": recorded["setup"], "summary": means, **kept})
    print(f"rewrote {path.relative_to(RESULTS_DIR.parents[1])} (rows as recorded {recorded['date']})")
