"""Regenerates the README's result sections, and those of docs/peers.md, from the recorded JSON.

    python benchmarks/readme_results.py          # rewrite README.md and docs/peers.md in place
    python benchmarks/readme_results.py --check  # exit 1 where they differ from the JSON

The README's sections "Quality", "Side by side with FuxiCTR" and "Training step", and the
"Results" / "Reading" sections of docs/peers.md, are generated here: their tables from
``benchmarks/results/{quality,peers,train_step}.json``, their readings from the same files plus,
for the MovieLens reading, the finished runs' test predictions under ``benchmarks/.data/runs``
(the between-user analysis). Every figure those sections quote has one source; the prose around the
figures (what was tried, how we read it) lives in the templates below and is edited here,
never in the README.

After new quality runs, refresh ``peers.json`` first (``python benchmarks/peers.py
--collect-only``: its EM3 rows are read from ``quality.json``), then run this script, then
``python benchmarks/run_all.py --collect-only`` for REPORT.md.

The readings need the runs: without ``benchmarks/.data/runs`` (a fresh clone) the script says
so and exits 2. The tables alone (``quality_table`` and friends) need only the JSON; the test
suite checks that the README holds them.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.quality import PRESETS, PRIOR_ALONE  # noqa: E402
from benchmarks.quality import SELECTED as SEL  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
RUNS = REPO / "benchmarks" / ".data" / "runs"
README = REPO / "README.md"
PEERS_DOC = REPO / "docs" / "peers.md"


def load(name: str, results: Path = RESULTS) -> dict:
    """A recorded result file: ``results/<name>.json``."""
    return json.loads((results / f"{name}.json").read_text())


def _mean_std(r: dict, k: str) -> str:
    if r.get(k) is None:
        return "n/a"
    return f"{r[k]:.4f}" if r["seeds"] == 1 else f"{r[k]:.4f} ± {r[k + '_std']:.4f}"


def _n(v: float | None, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def quality_table(q: dict) -> list[str]:
    """The README's quality table rows, one per dataset x preset of ``quality.json``."""
    return [f"| {r['dataset']} | `{r['preset']}` | {r['seeds']} | {_mean_std(r, 'auc')} | "
            f"{_mean_std(r, 'gauc')} | {_mean_std(r, 'auc_cold_item')} | "
            f"{_mean_std(r, 'gauc_cold_item')} |" for r in q["rows"]]


def peers_table(p: dict) -> list[str]:
    """The side-by-side table rows, one per model x dataset of ``peers.json``."""
    return [f"| {r['model']} | {r['dataset']} | {r['test_auc']:.4f} | {r['gauc']:.4f} | "
            f"{_n(r.get('auc_cold_item'), '.4f')} | {_n(r['train_samples_per_s'], ',.0f')} | "
            f"{_n(r.get('first_epoch_samples_per_s'), ',.0f')} | {_n(r['peak_rss_mb'], ',.0f')} |"
            for r in p["summary"]]



def target_lines(targets: list[dict]) -> list[str]:
    """One Markdown bullet per recorded target: name, value, threshold, met or not."""
    return [f"- `{t['name']}`: {t['value']:+.4f} (target {t['target']}): "
            f"{'met' if t['met'] else '**not met**'}" for t in targets]

TRAIN_STEP_VARIANTS = {
    "shipped": "shipped (compiled dense tower)",
    "eager_tower": 'eager tower (`train.compile = "off"`)',
    "aten_prelu_eager": "eager tower + ATen PReLU backward",
    "plain_adamw": "per-parameter AdamW (not fused)",
    "no_malloc_tuning": "glibc malloc defaults",
    "planner_sharding": "TorchRec planner's own plan",
}


def train_step_table(t: dict) -> list[str]:
    """The training-step table rows, dataset x variant of ``train_step.json``."""
    by = {(x["dataset"], x["variant"]): x for x in t["rows"]}
    out = []
    for ds in ("synth", "movielens"):
        for v, label in TRAIN_STEP_VARIANTS.items():
            x = by[(ds, v)]
            out.append(f"| {ds} | {label} | {x['step_ms']:.2f} | {x['samples_per_s']:,.0f} | "
                       f"{x['shipped_speedup']:.3f} | {x['page_faults_per_step']:,.0f} | "
                       f"{x['sys_ms_per_step']:.2f} |")
    return out


# Recorded in benchmarks/results/quality.json at commit 8e390fe, before the prior-rate features
# (3 seeds, AUC / cold-item AUC / GAUC): what the MovieLens reading compares against.
BEFORE_PRIOR_RATE = {"commit": "8e390fe",
                     ("movielens", "id_only"): (0.6480, 0.5288, 0.6351),
                     ("movielens", "em3"): (0.6361, 0.4937, 0.6350),
                     ("movielens", "em3_frozen_seq"): (0.6693, 0.6330, 0.6466),
                     ("synth", "id_only"): (0.6739, 0.6061, 0.6579),
                     ("synth", "em3"): (0.7326, 0.6805, 0.7298),
                     "user_mean_auc": (0.598, 0.704)}


def _vs(diff: float, level: float = 0.003) -> str:
    """'level with', 'ahead of' or 'behind', for a difference of means."""
    return "level with" if abs(diff) < level else ("ahead of" if diff > 0 else "behind")


def readings(q: dict, p: dict, step: dict, runs_dir: Path = RUNS) -> tuple[str, str]:
    """The prose under the quality and side-by-side tables, its figures computed from the
    quality, peers and train-step results and the runs: (quality reading, peers reading)."""
    row = {(r["dataset"], r["preset"]): r for r in q["rows"]}
    runs = q["runs"]
    before = BEFORE_PRIOR_RATE

    def seedvals(ds, preset, key="auc_cold_item"):
        rs = sorted(runs[f"{ds}/{preset}"], key=lambda r: r["seed"])
        return " / ".join(f"{r[key]:.4f}" for r in rs)
    si, se = row[("synth", "id_only")], row[("synth", "em3")]
    mi, me = row[("movielens", "id_only")], row[("movielens", "em3")]
    mf, ma = row[("movielens", "em3_frozen_seq")], row[("movielens", PRIOR_ALONE)]
    mc, mn = row[("movielens", "em3_no_cic")], row[("movielens", "em3_no_interest")]
    ncic, full = row[("synth", "em3_no_cic")], row[("synth", "em3_full_seq")]
    nint, frozen = row[("synth", "em3_no_interest")], row[("synth", "em3_frozen_seq")]
    ncs, sa = row[("synth", "em3_no_content_seq")], row[("synth", PRIOR_ALONE)]
    ml_models = [r for (ds, preset), r in row.items() if ds == "movielens" and preset in PRESETS]

    def picks(ds):
        rs = sorted(runs[f"{ds}/{SEL}"], key=lambda r: r["seed"])
        return " / ".join(f"`{r['picked']}` ({r['valid_auc']['em3']:.4f} vs {r['valid_auc']['em3_frozen_seq']:.4f})" for r in rs)

    def npicked(ds, preset):
        return sum(r["picked"] == preset for r in runs[f"{ds}/{SEL}"])
    tg = {t["name"]: t["value"] for t in p["targets"]}
    met = {t["name"]: t["met"] for t in p["targets"]}
    speed_verdict = {(True, True): "the 1.5× target is met on both",
                      (True, False): "the 1.5× target is met on the synthetic world, not on MovieLens",
                      (False, True): "the 1.5× target is met on MovieLens, not on the synthetic world",
                      (False, False): "the 1.5× target is met on neither"}[(
        met["train_samples_per_s_ratio_id_only_over_fuxictr_din_synth"],
        met["train_samples_per_s_ratio_id_only_over_fuxictr_din_movielens"])]
    sm = {(r["dataset"], r["model"]): r for r in p["summary"]}
    fx = sm[("synth", "FuxiCTR 2.3.10 DIN")]
    ou = sm[("synth", "ours: id_only (DIN + DCNv2, TorchRec)")]
    fxm = sm[("movielens", "FuxiCTR 2.3.10 DIN")]
    oum = sm[("movielens", "ours: id_only (DIN + DCNv2, TorchRec)")]
    NOR = "ours: id_only, retention_heads=false (ablation)"

    def every(ds, a, b, key="auc"):
        ra = sorted(runs[f"{ds}/{a}"], key=lambda r: r["seed"])
        rb = sorted(runs[f"{ds}/{b}"], key=lambda r: r["seed"])
        n = sum(x[key] > y[key] for x, y in zip(ra, rb, strict=True))
        return "on every seed" if n == len(ra) else f"on {n} of {len(ra)} seeds"
    ts = {(r["dataset"], r["variant"]): r for r in step["rows"]}
    ps, pm = row[("synth", SEL)], row[("movielens", SEL)]
    ok = all(a["auc"] > b["auc"] and a["auc_cold_item"] > b["auc_cold_item"] for a, b in ((ps, si), (pm, mi)))
    beats = (f"Picked that way, EM3 is ahead of `id_only` on both datasets, on AUC ({ps['auc'] - si['auc']:+.3f} / "
              f"{pm['auc'] - mi['auc']:+.3f}) and on cold-item AUC ({ps['auc_cold_item'] - si['auc_cold_item']:+.3f} / "
              f"{pm['auc_cold_item'] - mi['auc_cold_item']:+.3f}).") if ok else (
        f"Picked that way, EM3 is ahead of `id_only` on the synthetic world ({ps['auc'] - si['auc']:+.3f} AUC, "
        f"{ps['auc_cold_item'] - si['auc_cold_item']:+.3f} cold-item AUC), and on MovieLens {pm['auc'] - mi['auc']:+.3f} AUC, "
        f"{pm['auc_cold_item'] - mi['auc_cold_item']:+.3f} cold-item AUC.")

    def between_users():
        """MovieLens test: its heaviest user, the AUC of scoring rows by their user's true like
        rate, and the recorded runs' per-user mean predictions."""
        import numpy as np
        import polars as pl
        from sklearn.metrics import roc_auc_score
        base = runs_dir / "movielens"
        p0 = pl.read_parquet(base / "id_only-s0/predictions/test.parquet")
        users = p0.group_by("user_id").agg(pl.len().alias("n"), pl.col("like").mean().alias("rate"),
                                           pl.col("cold_user").first()).sort("n", descending=True)
        top = users.row(0, named=True)
        oracle = roc_auc_score(p0["like"], p0.with_columns(pl.col("like").mean().over("user_id").alias("r"))["r"])
        a, u, top_pred = [], [], []
        for preset in ("id_only", "em3", "em3_frozen_seq", "em3_no_interest"):
            for r in sorted(runs[f"movielens/{preset}"], key=lambda r: r["seed"]):
                pred = pl.read_parquet(base / f"{preset}-s{r['seed']}/predictions/test.parquet")
                a.append(roc_auc_score(pred["like"], pred["pred_like"]))
                user_mean = pred.with_columns(pl.col("pred_like").mean().over("user_id").alias("m"))["m"]
                u.append(roc_auc_score(pred["like"], user_mean))
                top_pred.append(pred.filter(pl.col("user_id") == top["user_id"])["pred_like"].mean())
        return dict(top_user=top["user_id"], top_share=top["n"] / p0.height, top_rate=top["rate"],
                    top_cold=top["cold_user"], mean_rate=p0["like"].mean(), oracle=oracle,
                    n_runs=len(a), corr=float(np.corrcoef(a, u)[0, 1]), u_min=min(u), u_max=max(u),
                    top_min=min(top_pred), top_max=max(top_pred))
    bu = between_users()
    b_id, b_em3, b_fz = (before[("movielens", p)] for p in ("id_only", "em3", "em3_frozen_seq"))
    reading_quality = f"""Cold-item GAUC is the per-user AUC over the cold-item rows only: it asks whether each user's
new items are ordered right, which the cold-item AUC mixes with ranking users against each
other. `{PRIOR_ALONE}` scores every test row with its user's prior rate (the smoothed
rate of the primary label over the user's earlier rows; README, "The user's prior rate"), no
model at all: the score a model has to beat.

Reading: on the synthetic world EM3 beats the ID-only baseline by {se['auc'] - si['auc']:+.3f} AUC and
{se['auc_cold_item'] - si['auc_cold_item']:+.3f} cold-item AUC over 3 seeds (every seed: cold-item {seedvals('synth', 'em3')}
against {seedvals('synth', 'id_only')}), GAUC by {se['gauc'] - si['gauc']:+.3f} and cold-item GAUC by
{se['gauc_cold_item'] - si['gauc_cold_item']:+.3f}: content ranks a user's new items. The prior rate alone scores
{sa['auc']:.4f} AUC there, and the prior-rate features moved `id_only` by {si['auc'] - before[('synth', 'id_only')][0]:+.3f} AUC and `em3` by
{se['auc'] - before[('synth', 'em3')][0]:+.3f} (against quality.json at commit {before['commit']}): on this world a user's taste, not
their rate, decides the clicks. The ablations say where EM3's lead comes from:

- the interest loss is the lever: without it (`em3_no_interest`, 3 seeds: {nint['auc']:.4f} AUC) EM3 is
  {_vs(nint['auc'] - si['auc'])} `id_only` ({nint['auc'] - si['auc']:+.3f});
- CIC {'adds' if se['auc'] > ncic['auc'] else 'costs'} {abs(se['auc'] - ncic['auc']):.3f} AUC and {abs(se['auc_cold_item'] - ncic['auc_cold_item']):.3f} cold-item AUC on top of it
  (`em3_no_cic`, 3 seeds: {ncic['auc']:.4f} / {ncic['auc_cold_item']:.4f});
- the history path must be trainable here: frozen history content gives the interest loss only
  one trainable side (`em3_frozen_seq`, 3 seeds: {frozen['auc']:.4f} AUC). Training the whole
  Q-Former on the history instead of LoRA adapters (`em3_full_seq`, 3 seeds: {full['auc']:.4f} AUC,
  {full['auc_cold_item']:.4f} cold-item AUC) is {'ahead of' if full['auc'] > se['auc'] else 'behind'} `em3` by {abs(full['auc'] - se['auc']):.3f} AUC: LoRA gives up some accuracy
  for its far smaller trainable state (`python benchmarks/sequence_modes.py`);
- with the history attending over ID embeddings only (`em3_no_content_seq`, 3 seeds:
  {ncs['auc']:.4f} AUC) EM3 is {_vs(ncs['auc'] - si['auc'], 0.005)} `id_only` ({ncs['auc'] - si['auc']:+.3f}): target content alone does not carry it.

[docs/training.md](docs/training.md) has the diagnosis behind these defaults: linear probes of
the content embeddings, and an oracle run with the hidden topic as content.

On MovieLens (610 users, 76 of them in test) the prior rate is most of the answer:

- One user weighs a quarter of the test AUC: user {bu['top_user']}{' (never seen in training)' if bu['top_cold'] else ''} holds {bu['top_share']:.0%} of the
  test rows and likes {bu['top_rate']:.1%} of them (all test rows: {bu['mean_rate']:.1%}). Scoring every row with its
  user's true like rate would reach {bu['oracle']:.3f} AUC. The history holds only liked items, so
  before the prior-rate features a new user's harshness was nowhere in a row: `id_only` scored
  {b_id[0]:.4f} AUC / {b_id[1]:.4f} cold-item AUC and `em3` {b_em3[0]:.4f} / {b_em3[1]:.4f} (quality.json at commit {before['commit']}),
  and the models' per-user mean predictions ranked users at {before['user_mean_auc'][0]:.3f}–{before['user_mean_auc'][1]:.3f} AUC.
- With them, the prior rate alone scores {ma['auc']:.4f} AUC and {ma['auc_cold_item']:.4f} cold-item AUC, and every
  preset lands near it: {min(r['auc'] for r in ml_models):.4f}–{max(r['auc'] for r in ml_models):.4f} AUC (means of 3 seeds; `id_only` {mi['auc']:.4f}, `em3`
  {me['auc']:.4f}); {sum(r['auc'] > ma['auc'] for r in ml_models)} of the {len(ml_models)} presets score above it. The per-user mean predictions of the {bu['n_runs']} `id_only` / `em3` / `em3_frozen_seq` /
  `em3_no_interest` runs now rank users at {bu['u_min']:.3f}–{bu['u_max']:.3f} AUC, and their mean prediction for
  user {bu['top_user']} is {bu['top_min']:.2f}–{bu['top_max']:.2f}. Within users the models add what the rate cannot: GAUC
  {mi['gauc']:.3f} for `id_only` (before: {b_id[2]:.3f}), against {ma['gauc']:.3f} for the rate alone.
- `em3` is {_vs(me['auc'] - mi['auc'])} `id_only` on AUC ({me['auc'] - mi['auc']:+.4f}) and {_vs(me['auc_cold_item'] - mi['auc_cold_item'])} it on cold-item AUC
  ({me['auc_cold_item'] - mi['auc_cold_item']:+.4f}). Here its two contrastive losses {'cost' if mc['auc'] > me['auc'] and mn['auc'] > me['auc'] else 'do not both cost'}: without CIC
  (`em3_no_cic`: {mc['auc']:.4f} / {mc['auc_cold_item']:.4f}) or without the interest loss (`em3_no_interest`:
  {mn['auc']:.4f} / {mn['auc_cold_item']:.4f}) EM3 is {mc['auc'] - mi['auc']:+.4f} / {mn['auc'] - mi['auc']:+.4f} AUC and {mc['auc_cold_item'] - mi['auc_cold_item']:+.4f} / {mn['auc_cold_item'] - mi['auc_cold_item']:+.4f}
  cold-item AUC from `id_only`, where on the synthetic world each is worth several points. With
  random `tiny` towers there is little in MovieLens item content to align the ID embeddings or
  the user's history with, and the presets keep the weights tuned on the synthetic world.
  `em3_frozen_seq`, ahead before the features ({b_fz[0]:.4f} / {b_fz[1]:.4f}), is {_vs(mf['auc'] - mi['auc'])} `id_only` now
  ({mf['auc'] - mi['auc']:+.4f} AUC, {mf['auc_cold_item'] - mi['auc_cold_item']:+.4f} cold-item AUC).
- The cold-item slice is 2,001 test rows from 70 users (1,322 items): its AUC mostly ranks
  those users against each other. Within a user no model orders the new items much better than
  chance: cold-item GAUC {mi['gauc_cold_item']:.3f} for `id_only`, {me['gauc_cold_item']:.3f} for `em3`, {mf['gauc_cold_item']:.3f} for `em3_frozen_seq`.

The row `{SEL}` is what a user gets who trains both history modes and keeps,
per seed, the one with the higher validation AUC (valid AUC of em3 vs em3_frozen_seq in brackets):

- synthetic world, seeds 0 / 1 / 2: {picks('synth')};
- MovieLens: {picks('movielens')}.

{beats}

The item content itself says little on MovieLens: the `tiny` towers are random (no pretrained
weights can be downloaded on these machines), they see the first 14 characters of the title
and a 32×32 poster, and a linear probe of em3's trained content embeddings predicts the genre
barely above chance (probe AUC 0.55–0.62 for Drama, Comedy, Horror, Animation; seed 0). Before
the prior-rate features, neither genres first in the item text with 64 text tokens nor TF-IDF +
SVD text vectors (64 dims, via `content.text=<file>.parquet`) moved `em3` outside its seed
spread. Real pretrained encoders (`content.vision` / `content.text` take local model
directories) are what item content needs on real data, and a test split with more users is
what would show it."""
    d_syn, d_ml = tg["test_auc_id_only_minus_fuxictr_din_synth"], tg["test_auc_id_only_minus_fuxictr_din_movielens"]
    e_syn = (tg["em3_minus_best_of_id_only_and_fuxictr_din_auc_synth"],
             tg["em3_minus_best_of_id_only_and_fuxictr_din_auc_cold_item_synth"])
    e_ml = (tg["em3_minus_best_of_id_only_and_fuxictr_din_auc_movielens"],
            tg["em3_minus_best_of_id_only_and_fuxictr_din_auc_cold_item_movielens"])
    mfr = sm[("movielens", f"ours: {SEL} (benchmarks/quality.py, 3 seeds)")]
    tg2 = {"auc": mfr["test_auc"] - max(fxm["test_auc"], oum["test_auc"]),
            "cold": mfr["auc_cold_item"] - max(fxm["auc_cold_item"], oum["auc_cold_item"])}

    def seed_rates(ds, model):
        rs = sorted((r for r in p["rows"] if r["dataset"] == ds and r["model"].startswith(model)),
                    key=lambda r: r["seed"])
        return " / ".join(f"{r['train_samples_per_s'] / 1e3:.1f}k" for r in rs)

    def em3_verdict(auc, cold):
        if auc > 0 and cold > 0:
            return f"beats both by {auc:+.3f} AUC and {cold:+.3f} cold-item AUC"
        return (f"does not beat both: {auc:+.3f} AUC and {cold:+.3f} cold-item AUC against the better "
                "of the two")
    reading_peers = f"""Reading:

- **Speed.** Ours is {tg['train_samples_per_s_ratio_id_only_over_fuxictr_din_synth']:.2f}× FuxiCTR's warm training samples/s on the synthetic world and
  {tg['train_samples_per_s_ratio_id_only_over_fuxictr_din_movielens']:.2f}× on MovieLens ({speed_verdict}). Where our lead comes from: the dense
  tower runs through `torch.compile` (`python benchmarks/train_step.py`: eager, the step takes
  {ts[('synth', 'eager_tower')]['shipped_speedup']:.2f}× / {ts[('movielens', 'eager_tower')]['shipped_speedup']:.2f}× as long); the DIN unit scores only the valid history positions, with a
  factored first layer (`python benchmarks/din_attention.py`); in a world of one there is no
  DDP and no table is split. The compile is paid in the first epoch, which the
  compared figure leaves out for both libraries and the table shows on its own: ours
  {ou['first_epoch_samples_per_s']:,.0f} / {oum['first_epoch_samples_per_s']:,.0f} samples/s there against FuxiCTR's {fx['first_epoch_samples_per_s']:,.0f} / {fxm['first_epoch_samples_per_s']:,.0f} (synthetic /
  MovieLens). Compiling also costs memory: peak RSS {ou['peak_rss_mb']:.0f} / {oum['peak_rss_mb']:.0f} MB against FuxiCTR's
  {fx['peak_rss_mb']:.0f} / {fxm['peak_rss_mb']:.0f} MB. The ratio moves with this shared machine's load: the earlier runs of
  this command on 2026-11-21, before the prior-rate features, gave 1.53×–1.96× on the synthetic
  world and 1.28×–1.58× on MovieLens; FuxiCTR alone moved by up to 16% between runs. In the
  recorded run ours trained at {seed_rates('movielens', 'ours: id_only (')} samples/s on the three MovieLens seeds,
  FuxiCTR at {seed_rates('movielens', 'FuxiCTR')}. Why
  MovieLens stays lower: FuxiCTR's DIN scores every one of the B × L history slots whatever
  their fill, ours only the filled ones; 40% of the slots are filled on the synthetic world,
  ~88% on MovieLens, so that saving mostly vanishes there, and our extra work (TorchRec's input
  distribution, the DCNv2 cross layers, three heads) remains.
- **Accuracy.** Both models get the same prior-rate features (two pooled IDs and the dense
  logit, FuxiCTR's as a numeric feature). On the synthetic world our multi-task `id_only` is
  {_vs(d_syn, 0.001)} FuxiCTR's single-label DIN ({d_syn:+.4f} AUC; cold items {ou['auc_cold_item']:.3f} vs {fx['auc_cold_item']:.3f}){'' if d_syn >= 0 else ': not met'}. On
  MovieLens ours is {_vs(d_ml, 0.001)} it ({d_ml:+.4f} AUC){'' if d_ml >= 0 else ': not met'}. The retention heads are part
  of the gap: without them (the ablation rows) ours is {sm[('synth', NOR)]['test_auc'] - fx['test_auc']:+.4f} / {sm[('movielens', NOR)]['test_auc'] - fxm['test_auc']:+.4f} AUC from FuxiCTR.
  On MovieLens both libraries' validation AUC has fallen by the third epoch (early stopping
  keeps the best weights), and the per-seed test AUCs spread by up to ±0.01 on a split where
  one user holds a quarter of the rows.
- **EM3.** The `em3` row (read from `benchmarks/results/quality.json`: same preparation, same
  test rows, not retrained here) {em3_verdict(*e_syn)} on the
  synthetic world. On MovieLens it {em3_verdict(*e_ml)}. The row `{SEL}` (also
  from `quality.json`, 3 seeds: per seed, em3 or its frozen-history variant, whichever has the higher
  validation AUC; on MovieLens that is `em3_frozen_seq` on {npicked('movielens', 'em3_frozen_seq')} of 3 seeds) is at
  {tg2['auc']:+.3f} AUC and {tg2['cold']:+.3f} cold-item AUC over the better ID model there (see Quality above)."""
    return reading_quality, reading_peers


def quality_section(q: dict, reading: str) -> str:
    """The README's "Quality" section: intro, command, table, targets, reading."""
    lines = ["### Quality: `python benchmarks/quality.py`", "",
             "Test split, primary label (`click` on the synthetic world; `like` = rating ≥ 4 on",
             "MovieLens with posters), default presets (3 epochs, early stopping on valid AUC), mean ±",
             "std over seeds 0, 1, 2 for every preset. The last two rows of each dataset are not",
             "presets: per seed, `em3` or `em3_frozen_seq`, whichever has the higher validation AUC,",
             "and the test rows scored with their user's prior rate alone, no model (see the reading",
             "below). Every row was trained with the current code (prior-rate features, compiled dense",
             "tower, world-of-one plan, fused dense AdamW; each run's `run.json` names its commit).",
             "Recorded with (finished runs are reused from `benchmarks/.data/runs`):",
             "", "```bash", *q["command"].split("; "), "```", "",
             "| dataset | model | seeds | AUC | GAUC | cold-item AUC | cold-item GAUC |", "|---|---|---:|---|---|---|---|"]
    lines += quality_table(q)
    lines += ["", "Targets recorded in `benchmarks/results/quality.json` (em3 − id_only):", ""]
    lines += target_lines(q["targets"])
    return "\n".join([*lines, "", reading, "", ""])


def peers_section(p: dict, reading: str) -> str:
    """The README's "Side by side with FuxiCTR" section."""
    lines = ["### Side by side with FuxiCTR: `python benchmarks/peers.py --seeds 3`", "",
              "Our `id_only` vs FuxiCTR 2.3.10's DIN (installed from PyPI into its own `.venv-peers`), on",
              "exactly the same split, features and behaviour sequences, same machine, same run, one torch",
              "thread each; means over seeds 0–2 ([docs/peers.md](docs/peers.md) has the set-up). Train",
              "samples/s: the median of the epochs after the first; the first epoch, with each library's",
              "start-up in it (for ours: compiling the dense tower), is its own column:", "",
              "| model | dataset | test AUC | GAUC | cold-item AUC | train samples/s | first epoch samples/s | peak RSS (MB) |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    lines += peers_table(p)
    lines += ["", "Targets:", ""]
    lines += target_lines(p["targets"])
    return "\n".join([*lines, "", reading, "", ""])


def train_step_section(t: dict) -> str:
    """The README's "Training step" section: table and the reading of each variant."""
    by = {(x["dataset"], x["variant"]): x for x in t["rows"]}

    lines = ["### Training step: `python benchmarks/train_step.py`", "",
             "The `id_only` preset's real training step (forward, loss, backward with the fused sparse",
             "optimizer, dense optimizer step) on pre-built batches of each dataset, 1 thread, batch 512,",
             "3 interleaved rounds, median. `eager tower`, `ATen PReLU backward` and the per-parameter",
             "AdamW are timed in the shipped process, alternating with it repeat by repeat and in which",
             "goes first (same parameters; the tower's path, the PReLU class or the dense optimizer",
             "swapped), because step times here differ by up to ~30% from one process to the next;",
             "`glibc malloc defaults` and `TorchRec planner's own plan` run in their own processes",
             "(malloc settings and the sharding plan are per process). Compiling happens in the",
             "warm-up steps:",
             "", "| dataset | variant | step (ms) | samples/s | step time / shipped | page faults / step | kernel time / step (ms) |",
             "|---|---|---:|---:|---:|---:|---:|"]
    lines += train_step_table(t)

    def sp(ds, v):
        return by[(ds, v)]["shipped_speedup"]

    def rng(ds, v):
        x = by[(ds, v)]['rounds_ms']
        return f"{min(x):.1f}–{max(x):.1f}"

    def rel(ds, a, b):
        return by[(ds, a)]["step_ms"] / by[(ds, b)]["step_ms"]
    lines += ["",
      f"- **Compiled dense tower.** Run eagerly, the step takes {sp('synth', 'eager_tower'):.2f}× (synthetic) and {sp('movielens', 'eager_tower'):.2f}× (MovieLens)",
      "  as long: Inductor fuses the attention unit's elementwise passes over its N × 64 activations",
      "  ([docs/ranking.md](docs/ranking.md)). The one-off compile costs the first epoch (the",
      "  first-epoch column of the FuxiCTR table above).",
      "- **No split tables in a world of one.** With the planner's own plan the step takes",
      f"  {sp('synth', 'planner_sharding'):.2f}× / {sp('movielens', 'planner_sharding'):.2f}× as long in this run, against 1.20× / 1.07× in the run before the",
      "  prior-rate features. Left to itself the planner is free to split the item table row-wise,",
      "  as it did then (bucketing and split exchanges around each lookup); alone, we let it keep",
      "  tables whole only (table-wise or data-parallel; its data-parallel picks stay, since they",
      "  also decide the optimizer, see docs/ranking.md): level or faster in both runs.",
      f"- **PReLU.** With the eager tower, ATen's backward makes the step {rel('synth', 'aten_prelu_eager', 'eager_tower'):.3f}× (synthetic) and {rel('movielens', 'aten_prelu_eager', 'eager_tower'):.3f}×",
      "  (MovieLens) as long as ours (`ranking/prelu.py`, bit-identical gradients); compiled, Inductor",
      "  generates the backward either way.",
      "- **Fused AdamW.** With PyTorch's per-parameter AdamW for the dense parameters the step",
      f"  takes {sp('synth', 'plain_adamw'):.3f}× / {sp('movielens', 'plain_adamw'):.3f}× as long; `fused=True` updates them all in one call (`ranking/optim.py`).",
      f"- **malloc.** {sp('synth', 'no_malloc_tuning'):.2f} / {sp('movielens', 'no_malloc_tuning'):.2f} in this run; its own process's rounds spread widely here ({rng('synth', 'no_malloc_tuning')} ms on",
      f"  the synthetic world, {rng('movielens', 'no_malloc_tuning')} ms on MovieLens, against {rng('synth', 'shipped')} / {rng('movielens', 'shipped')} ms shipped), so read it",
      "  as level: the compiled tower no longer allocates the few-MB temporaries that glibc's defaults",
      "  kept handing back as fresh pages (with the eager tower the tuning was worth 1.08–1.76× on",
      "  MovieLens in five earlier runs). The trainer still sets it, for",
      "  the eager path ([docs/training.md](docs/training.md#throughput-and-mfu)).", "", ""]
    return "\n".join(lines)


def peers_doc_sections(p: dict, reading: str) -> str:
    """docs/peers.md from "## Results" up to "## FuxiCTR notes"."""
    tab = ["## Results (2 × AMD EPYC cores, 3 seeds, 3 epochs)", "",
           "Means over seeds 0–2 (rows per seed in `benchmarks/results/peers.json`), from the run",
           "recorded there (presets as shipped: retention-head loss weight 0.2):", "",
           "| model | dataset | test AUC | GAUC | cold-item AUC | train samples/s | first epoch samples/s | peak RSS MB |", "|---|---|---|---|---|---|---|---|"]
    tab += peers_table(p)
    tab += ["", "| target | value | met |", "|---|---|---|"]
    for t in p["targets"]:
        tab.append(f"| `{t['name']}` ({t['target']}) | {t['value']:+.4f} | {'yes' if t['met'] else 'no'} |")
    doc_reading = reading.replace("Reading:\n\n", "").replace(
        "(see Quality above)", "(see the quality section of the README)")
    tab += ["", "## Reading", "", doc_reading, "", ""]
    return "\n".join(tab)


def _replace(text: str, pattern: str, block: str) -> str:
    new, count = re.subn(pattern, lambda _: block, text, flags=re.S)
    if count != 1:
        raise SystemExit(f"README: expected one section matching {pattern!r}, found {count}")
    return new


def render(readme: str, doc: str) -> tuple[str, str]:
    """README and docs/peers.md texts with their generated sections rebuilt."""
    q, p, t = load("quality"), load("peers"), load("train_step")
    reading_q, reading_p = readings(q, p, t)
    block = quality_section(q, reading_q) + peers_section(p, reading_p)
    readme = _replace(readme, r"### Quality: .*?(?=### Data pipeline)", block)
    readme = _replace(readme, r"### Training step: .*?(?=### Metrics:)", train_step_section(t))
    a, b = doc.index("## Results"), doc.index("## FuxiCTR notes")
    return readme, doc[:a] + peers_doc_sections(p, reading_p) + doc[b:]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true",
                    help="write nothing; exit 1 if README.md or docs/peers.md differ from the JSON")
    args = ap.parse_args()
    if not RUNS.is_dir():
        print(f"{RUNS} is absent: the readings quote figures computed from the finished runs; "
              "run benchmarks/quality.py first", file=sys.stderr)
        return 2
    readme, doc = README.read_text(), PEERS_DOC.read_text()
    new_readme, new_doc = render(readme, doc)
    stale = [path.name for path, old, new in ((README, readme, new_readme), (PEERS_DOC, doc, new_doc))
             if old != new]
    if args.check:
        print("up to date" if not stale else f"stale: {', '.join(stale)}")
        return 1 if stale else 0
    README.write_text(new_readme)
    PEERS_DOC.write_text(new_doc)
    print(f"rewrote {', '.join(stale)}" if stale else "already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
