"""Generates the README's headline table and docs/results.md from the recorded JSON.

    python benchmarks/readme_results.py          # rewrite both in place
    python benchmarks/readme_results.py --check  # write nothing; exit 1 where they differ

Every table of these two places has one source, ``benchmarks/results/{quality,peers,
train_step}.json``, and is edited there (by re-running the benchmark), never by hand. Findings,
how they were reached and what was tried beside them are dated prose in the topic docs
(docs/ranking.md, docs/training.md, docs/peers.md). The test suite runs ``--check``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.readme_em3_speed import em3_speed_section  # noqa: E402
from benchmarks.readme_shards import (  # noqa: E402
    scale_section,
    shard_stream_section,
    spark_section,
)

RESULTS = REPO / "benchmarks" / "results"
README = REPO / "README.md"
RESULTS_DOC = REPO / "docs" / "results.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"


def load(name: str, results: Path = RESULTS) -> dict:
    """A recorded result file: ``results/<name>.json``."""
    return json.loads((results / f"{name}.json").read_text())


def set_variants(results: Path = RESULTS) -> list[tuple[str, dict | None, dict | None]]:
    """The results recorded with ``--set`` overrides, as ``(label, peers, quality)`` per
    overrides hash (``peers-set-<hash>.json``, ``quality-set-<hash>.json``; either may be
    missing). ``label`` is the overrides as the command gave them, e.g.
    ``data.split="user_time"``."""
    out = []
    keys = sorted({f.stem.split("-set-")[1] for f in results.glob("*-set-*.json")
                   if f.stem.split("-set-")[0] in ("peers", "quality")})
    for key in keys:
        got = {name: load(f"{name}-set-{key}", results)
               if (results / f"{name}-set-{key}.json").is_file() else None
               for name in ("peers", "quality")}
        command = (got["peers"] or got["quality"])["command"]
        words = shlex.split(command)
        label = " ".join(words[i + 1] for i, w in enumerate(words) if w == "--set")
        out.append((label, got["peers"], got["quality"]))
    return out


def _mean_std(r: dict, k: str) -> str:
    if r.get(k) is None:
        return "n/a"
    return f"{r[k]:.4f}" if r["seeds"] == 1 else f"{r[k]:.4f} ± {r[k + '_std']:.4f}"


def _n(v: float | None, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def _gap(g: dict | None) -> str:
    """``+0.0045 [−0.0043, +0.0125]``: a paired gain with its 95% interval."""
    if g is None:
        return "–"
    return f"{g['gain']:+.4f} [{g['ci_low']:+.4f}, {g['ci_high']:+.4f}]"


def quality_table(q: dict) -> list[str]:
    """One row per dataset x preset of ``quality.json``, with the day it was trained (rows
    recorded before rows carried one: "before 2026-12-05")."""
    return [f"| {r['dataset']} | `{r['preset']}` | {r['seeds']} | {_mean_std(r, 'auc')} | "
            f"{_mean_std(r, 'gauc')} | {_mean_std(r, 'auc_cold_item')} | "
            f"{_mean_std(r, 'gauc_cold_item')} | {r.get('recorded', 'before 2026-12-05')} |"
            for r in q["rows"]]


def peers_table(p: dict) -> list[str]:
    """One row per model x dataset of ``peers.json``'s summary (means over seeds)."""
    return [f"| {r['model']} | {r['dataset']} | {r['test_auc']:.4f} | {r['gauc']:.4f} | "
            f"{_n(r.get('logloss'), '.4f')} | {_n(r.get('auc_cold_item'), '.4f')} | "
            f"{_n(r['train_samples_per_s'], ',.0f')} | {_n(r['peak_rss_mb'], ',.0f')} |"
            for r in p["summary"]]


def target_lines(targets: list[dict]) -> list[str]:
    """One Markdown bullet per recorded target: name, value, threshold, met or not."""
    return [f"- `{t['name']}`: {t['value']:+.4f} (target {t['target']}): "
            f"{'met' if t['met'] else '**not met**'}" for t in targets]


def train_step_table(t: dict) -> list[str]:
    """One row per dataset x variant of ``train_step.json``."""
    return [f"| {x['dataset']} | {x['variant']} | {x['step_ms']:.2f} | {x['samples_per_s']:,.0f} | "
            f"{x['shipped_speedup']:.3f} |" for x in t["rows"]]


def gap_rows(p: dict, q: dict, label: str = "") -> list[str]:
    """The headline: per dataset, ours − the strongest peer, as paired gains with intervals
    (``peers.json`` "paired": ``id_only`` − the best FuxiCTR model on validation GAUC;
    ``quality.json`` "paired_real": ``em3`` with real towers − the best ID model and −
    ``frozen_content`` with the same towers). ``label``: the ``--set`` overrides the two were
    recorded with, shown beside the dataset."""
    rows = []
    where = f" ({label})" if label else ""
    for name, g in p.get("paired", {}).items():
        rows.append(f"| {name}{where} | `id_only` − {g['champion']} | {_gap(g.get('auc'))} | "
                    f"{_gap(g.get('gauc'))} | {_gap(g.get('auc_cold_item'))} | "
                    f"{_gap(g.get('logloss'))} |")
    for name, gaps in q.get("paired_real", {}).items():
        for g in gaps.values():
            champion = g["champion"] if g["champion"].startswith("FuxiCTR") else f"`{g['champion']}`"
            rows.append(f"| {name}{where} | `{g['challenger']}` − {champion} | {_gap(g.get('auc'))} | "
                        f"{_gap(g.get('gauc'))} | {_gap(g.get('auc_cold_item'))} | – |")
    return rows


def headline(p: dict, q: dict, variants: list[tuple[str, dict | None, dict | None]] = ()
             ) -> str:
    """The README block between the ``results`` markers: the presets as shipped, then each
    ``--set`` variant (``set_variants``)."""
    return "\n".join([
        START,
        "| dataset | ours − peer | AUC | GAUC | cold-item AUC | logloss (peer − ours) |",
        "|---|---|---|---|---|---|",
        *gap_rows(p, q),
        *(row for label, vp, vq in variants for row in gap_rows(vp or {}, vq or {}, label)),
        END])


def _recorded(r: dict) -> str:
    """When and where a result file was recorded: ``date, cpu × cores``."""
    return f"{r['date']}, {r['machine']['cpu']} × {r['machine']['cores']}"


def peers_section(p: dict, title: str) -> list[str]:
    """The side-by-side with FuxiCTR as recorded in ``p`` (a ``peers*.json``)."""
    return [f"## {title}: `{p['command']}`", "",
            f"{_recorded(p)}. Means over seeds;",
            "train samples/s is the median of the epochs after the first. Precision: "
            f"{p['setup']['precision']}", "",
            "| model | dataset | test AUC | GAUC | logloss | cold-item AUC | train samples/s | peak RSS (MB) |",
            "|---|---|---:|---:|---:|---:|---:|---:|", *peers_table(p), "",
            "| dataset | ours − peer | AUC | GAUC | cold-item AUC | logloss (peer − ours) |",
            "|---|---|---|---|---|---|", *gap_rows(p, {}), "",
            "Targets:", "", *target_lines(p["targets"]), ""]


def quality_section(q: dict, title: str) -> list[str]:
    """The quality table, its paired gains and targets as recorded in ``q``."""
    out = [f"## {title}: `{q['command']}`", "",
           f"{_recorded(q)}. Test split, primary",
           "label, mean ± std over seeds. Each row says the day it was trained: invocations",
           "merge into one file, and a row trained before a change of data or defaults stays as",
           "recorded until its command is run again (a row whose runs were of other data than",
           "the dataset prepared now is dropped).", "",
           "| dataset | model | seeds | AUC | GAUC | cold-item AUC | cold-item GAUC | trained |",
           "|---|---|---:|---|---|---|---|---|", *quality_table(q), ""]
    paired = [(name, g) for name, g in q.get("paired", {}).items()]
    paired += [(name, g) for name, rows in q.get("paired_pretrained", {}).items()
               for g in rows.values()]
    paired += [(name, g) for name, rows in q.get("paired_real", {}).items() for g in rows.values()]
    if paired:
        out += ["| dataset | challenger − champion | AUC | GAUC | cold-item AUC |", "|---|---|---|---|---|"]
        out += [f"| {name} | `{g['challenger']}` − `{g['champion']}` | {_gap(g.get('auc'))} | "
                f"{_gap(g.get('gauc'))} | {_gap(g.get('auc_cold_item'))} |" for name, g in paired]
        out.append("")
    return out + ["Targets:", "", *target_lines(q["targets"]), ""]


def results_doc(q: dict, p: dict, t: dict,
                variants: list[tuple[str, dict | None, dict | None]] = ()) -> str:
    """docs/results.md, whole: the presets as shipped, the training step, then each ``--set``
    variant (``set_variants``)."""
    out = ["# Results", "",
           "Generated by `python benchmarks/readme_results.py` from `benchmarks/results/*.json`;",
           "do not edit by hand. Each section names the command and machine that recorded it.",
           "Gains are paired: a bootstrap over test users of the two models' seed ensembles on",
           "the same rows, 95% interval in brackets (the test split's share of the noise; the ±",
           "of a table is the spread over training seeds). Findings and what was tried beside",
           "them: [ranking](ranking.md), [training](training.md), [peers](peers.md).", ""]
    out += peers_section(p, "Side by side with FuxiCTR")
    out += quality_section(q, "Quality")
    out += [f"## Training step: `{t['command']}`", "",
            f"{_recorded(t)}. The `id_only` step",
            "(forward, loss, backward, optimizer), median of interleaved rounds; the last column",
            "is the variant's step time over the shipped step's, measured in the same run.", "",
            "| dataset | variant | step (ms) | samples/s | step time / shipped |",
            "|---|---|---:|---:|---:|", *train_step_table(t), ""]
    for label, vp, vq in variants:
        if vp is not None:
            out += peers_section(vp, f"Side by side with FuxiCTR, `{label}`")
        if vq is not None:
            out += quality_section(vq, f"Quality, `{label}`")
    return "\n".join(out)


def render(readme: str) -> tuple[str, str]:
    """The README with its headline rebuilt, and docs/results.md."""
    q, p, t = load("quality"), load("peers"), load("train_step")
    variants = set_variants()
    a, b = readme.index(START), readme.index(END) + len(END)
    doc = results_doc(q, p, t, variants)
    sections = {"em3_speed": em3_speed_section, "shard_stream": shard_stream_section,
                "scale": scale_section, "spark_prepare": spark_section}
    for name, section in sections.items():
        if (RESULTS / f"{name}.json").is_file():
            doc += "\n" + "\n".join(section(load(name)))
    return readme[:a] + headline(p, q, variants) + readme[b:], doc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true",
                    help="write nothing; exit 1 if README.md or docs/results.md differ from the JSON")
    args = ap.parse_args()
    readme = README.read_text()
    doc = RESULTS_DOC.read_text() if RESULTS_DOC.is_file() else ""
    new_readme, new_doc = render(readme)
    stale = [path.name for path, old, new in ((README, readme, new_readme), (RESULTS_DOC, doc, new_doc))
             if old != new]
    if args.check:
        print("up to date" if not stale else f"stale: {', '.join(stale)}")
        return 1 if stale else 0
    README.write_text(new_readme)
    RESULTS_DOC.write_text(new_doc)
    print(f"rewrote {', '.join(stale)}" if stale else "already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
