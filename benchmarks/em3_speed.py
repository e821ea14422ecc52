"""The ``em3`` training step on CPU: where its time goes, what each content-path lever is worth,
and its throughput and MFU against ``id_only`` on the same data (issue 30).

One process per dataset (the synthetic world, MovieLens when present) builds the ``em3``
preset's trainer (``recsys.training.train.Trainer``, default ``tiny`` towers, one intra-op
thread) and an ``id_only`` trainer on the same data, and times ``train_step`` (forward, loss,
backward with the fused sparse optimizer, gradient clipping, dense optimizer step) on the same
pre-built batches. The ``em3`` variants run on the same parameters, alternating repeat by
repeat (and which goes first), as ``benchmarks/train_step.py`` does:

* ``before``: the content path as it was before issue 30: the last Q-Former block over every
  position (``multimodal.testing.full_last_block``) and every history chunk
  recomputed in backward (``ItemContentEncoder.keep_last_chunk = False``), float32;
* ``query_only_last_block``: ``before`` with the last block over the K query positions only;
* ``keep_last_chunk``: ``before`` with the last history chunk's activations kept;
* ``shipped``: both (the library's default);
* ``shipped_bf16``: ``shipped`` with the Q-Former under CPU bf16 autocast
  (``content.cpu_precision = "bf16"``);
* ``shipped_sdpa_math``: ``shipped`` with PyTorch's math attention instead of the fused CPU
  flash kernel (``torch.nn.attention.sdpa_kernel``), to see whether the fused kernel pays at
  these sizes;
* ``id_only``: the ``id_only`` preset's step (its own trainer).

Each step is timed twice: wall clock and the thread's CPU time (``time.thread_time``). The
machine this runs on is shared, and under load the wall clock of a one-thread step mostly
measures how often the scheduler ran it; CPU time is what the step costs. Targets use CPU
time; both are recorded. Per variant the figure is the best of ``REPEATS`` repeats of
``STEPS`` steps, then the median over ``--rounds`` processes.

Components (``before`` and ``shipped``): each part of the step run alone, forward and backward,
on the same batch, CPU time: the Q-Former over the target items, the history pass (LoRA,
checkpointed as the variant does it), the deduplication (``torch.unique``, gather, scatter of
the embeddings), the ranking model's TorchRec lookups, its dense tower (ranking forward and
backward minus the lookups), the CIC and interest losses, and the optimizer (zero_grad, clip,
dense step). Their sum is close to the whole step (what remains is autograd's own work and
Python between the parts).

MFU is the trainer's reading: FLOPs per sample counted by ``recsys.training.perf.count_flops``
on one step of the variant, times samples/s, over the peak of the precision used (float32, or
bf16 for ``shipped_bf16``): the rate of a 1024 x 1024 matmul on the step's one thread, like
``recsys.training.perf.peak_flops``, but in thread CPU time like the steps.

    python benchmarks/em3_speed.py               # writes results/em3_speed.json
    python benchmarks/em3_speed.py --rounds 1 --datasets synth
    python benchmarks/em3_speed.py --update-parity   # only re-reads em3_parity.py's runs
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import print_table, target, write_results  # noqa: E402

VARIANTS = ("before", "query_only_last_block", "keep_last_chunk", "shipped", "shipped_bf16",
            "shipped_sdpa_math", "id_only")
COMPONENTS = ("qformer_targets", "history_pass", "dedup", "torchrec_lookups", "dense_tower",
              "content_losses", "optimizer")
WARMUP, STEPS, REPEATS = 6, 20, 3
if os.environ.get("EM3_SPEED_QUICK"):  # smoke runs (tests): a few steps
    WARMUP, STEPS, REPEATS = 2, 2, 1
# The targets: em3 samples/s >= 2x today's ("before"), MFU >= 25%, em3 / id_only
# >= 0.12 on the synthetic world.
MIN_SPEEDUP, MIN_MFU, MIN_ID_RATIO = 2.0, 0.25, 0.12


@contextmanager
def em3_variant(trainer, variant: str):
    """``trainer``'s em3 model set up as ``variant`` for the block (the same parameters)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from multimodal.testing import full_last_block

    enc = trainer.em3.content
    saved = (enc.keep_last_chunk, enc.cpu_bf16)
    enc.keep_last_chunk = variant not in ("before", "query_only_last_block")
    enc.cpu_bf16 = variant == "shipped_bf16"
    whole_block = variant in ("before", "keep_last_chunk")
    try:
        with (full_last_block(enc.qformer) if whole_block else nullcontext(),
              sdpa_kernel(SDPBackend.MATH) if variant == "shipped_sdpa_math" else nullcontext()):
            yield
    finally:
        enc.keep_last_chunk, enc.cpu_bf16 = saved


def thread_peak(dtype) -> float:
    """FLOP/s of a 1024 x 1024 matmul in ``dtype`` on this thread, in thread CPU time, so that
    it compares with steps timed the same way on a busy machine."""
    import torch

    from recsys.training.perf import peak_flops

    return peak_flops(torch.device("cpu"), dtype, clock=time.thread_time)


def timed(fn: Callable[[], None]) -> tuple[float, float]:
    """(wall s, thread CPU s) of one call."""
    w, c = time.perf_counter(), time.thread_time()
    fn()
    return time.perf_counter() - w, time.thread_time() - c


def component_times(trainer, batch, reps: int = 3) -> dict[str, float]:
    """CPU seconds of each part of the em3 step run alone, forward + backward (best of
    ``reps``); see the module docstring."""
    import torch

    from ranking.loss import multitask_bce
    from recsys.training.optim import clip_dense_gradients

    em3, enc, opt = trainer.em3, trainer.em3.content, trainer.optimizer
    model = trainer.model
    with torch.no_grad():
        tc, hc = enc(batch.target_item_rows, batch.hist_item_rows, batch.hist_mask)
    target_rows = batch.target_item_rows.reshape(-1).long()
    from multimodal.content import valid_positions

    valid, hist_rows = valid_positions(batch.hist_item_rows, batch.hist_mask)
    u_t, u_h = torch.unique(target_rows), torch.unique(hist_rows)

    def targets():
        enc.encode_items(u_t).sum().backward()

    def history():
        enc.encode_items(u_h, history=True).sum().backward()

    def dedup():
        a = torch.zeros(len(u_t), enc.hidden, requires_grad=True)
        b = torch.zeros(len(u_h), enc.hidden, requires_grad=True)
        _, inv_t = torch.unique(target_rows, return_inverse=True)
        _, inv_h = torch.unique(hist_rows, return_inverse=True)
        out_t = a.index_select(0, inv_t)
        out_h = enc._scatter(b.index_select(0, inv_h), valid, batch.hist_item_rows.shape)
        (out_t.sum() + out_h.sum()).backward()

    def lookups():
        pooled, target, history_ids, _ = em3.ranking.sparse_arch(batch.pooled, batch.sequence)
        (pooled.sum() + target.sum() + history_ids.sum()).backward()

    def ranking():
        out = em3.ranking(batch, tc.detach().requires_grad_(), hc.detach().requires_grad_())
        multitask_bce(out.logits, batch.labels, batch.label_masks, {})[0].backward()

    def losses():
        t, h = tc.detach().requires_grad_(), hc.detach().requires_grad_()
        ids = torch.randn(batch.size, em3.ranking.config.embedding_dim)
        loss = em3.cic(t, ids, batch.target_item_rows)
        primary = em3.ranking.layout.labels[0]
        loss = loss + em3.interest(t, h, batch.hist_mask, batch.labels[primary] > 0.5,
                                   batch.user_key)
        loss.backward()

    def optimizer():
        opt.zero_grad(set_to_none=False)  # gradients present, as after a backward
        if trainer.cfg.optim.grad_clip > 0:
            clip_dense_gradients(opt, trainer.cfg.optim.grad_clip)
        opt.step()

    parts = {"qformer_targets": targets, "history_pass": history, "dedup": dedup,
             "torchrec_lookups": lookups, "ranking_total": ranking, "content_losses": losses,
             "optimizer": optimizer}
    out = {}
    for name, fn in parts.items():
        best = float("inf")
        for _ in range(reps):
            model.zero_grad(set_to_none=True)
            best = min(best, timed(fn)[1])
        out[name] = best
    trainer.train_step(batch)  # leaves gradients for ``optimizer``'s next use, as in training
    out["dense_tower"] = max(0.0, out.pop("ranking_total") - out["torchrec_lookups"])
    return {k: out[k] for k in COMPONENTS}


def run_case(case: dict) -> dict:
    """In a subprocess: time every variant on dataset ``case["data"]`` → per variant
    ``{"wall_s", "cpu_s", "batch_size", "flops_per_sample", "peak", "components"?}``."""
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(29700 + os.getpid() % 1000))
    import torch

    import recsys.training.train
    from ranking.dist import init_process_group_from_env
    from recsys.config import load_train_config
    from recsys.training.perf import count_flops

    env = init_process_group_from_env()
    sets = [f'data.dir="{case["data"]}"', "train.threads=1", "tracking.enabled=false"]
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {p: recsys.training.train.Trainer(load_train_config(p, sets), Path(tmp) / p,
                                                     env, progress=False)
                    for p in ("em3", "id_only")}
        batches = {}
        for p, trainer in trainers.items():
            trainer.model.train()
            batches[p] = list(itertools.islice(trainer.loader, WARMUP + STEPS))
        em3 = trainers["em3"]

        def steps(variant: str, which: slice) -> Callable[[], None]:
            trainer = trainers["id_only" if variant == "id_only" else "em3"]
            todo = batches["id_only" if variant == "id_only" else "em3"][which]

            def run() -> None:
                with nullcontext() if variant == "id_only" else em3_variant(em3, variant):
                    for b in todo:
                        trainer.train_step(b)
            return run

        for variant in VARIANTS:  # compiles the towers, builds oneDNN kernels, optimizer state
            steps(variant, slice(0, WARMUP))()
        wall, cpu = dict.fromkeys(VARIANTS, float("inf")), dict.fromkeys(VARIANTS, float("inf"))
        for repeat in range(REPEATS):
            for variant in VARIANTS if repeat % 2 == 0 else VARIANTS[::-1]:
                w, c = timed(steps(variant, slice(WARMUP, None)))
                wall[variant], cpu[variant] = min(wall[variant], w / STEPS), min(cpu[variant], c / STEPS)
        peaks = {"fp32": thread_peak(torch.float32), "bf16": thread_peak(torch.bfloat16)}
        out = {}
        for variant in VARIANTS:
            trainer = trainers["id_only" if variant == "id_only" else "em3"]
            b = batches["id_only" if variant == "id_only" else "em3"][WARMUP]
            with nullcontext() if variant == "id_only" else em3_variant(em3, variant):
                flops = count_flops(lambda t=trainer, b=b: t.train_step(b)) / b.size
            precision = "bf16" if variant == "shipped_bf16" or (
                variant == "id_only" and trainer.em3.ranking.config.cpu_bf16) else "fp32"
            out[variant] = {"wall_s": wall[variant], "cpu_s": cpu[variant],
                            "batch_size": b.size, "flops_per_sample": flops,
                            "precision": precision, "peak": peaks[precision]}
        for variant in ("before", "shipped"):
            with em3_variant(em3, variant):
                out[variant]["components"] = component_times(em3, batches["em3"][WARMUP])
        b = batches["em3"][WARMUP]
        valid = b.hist_mask.reshape(-1)
        out["batch"] = {"rows": b.size, "history_positions": int(valid.sum()),
                        "distinct_targets": int(torch.unique(b.target_item_rows).numel()),
                        "distinct_history_items": int(torch.unique(
                            b.hist_item_rows.reshape(-1)[valid]).numel())}
    return out


def in_subprocess(case: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--case", json.dumps(case)], cwd=ROOT,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{case} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def parity_targets(summary: dict) -> list[dict]:
    """One target per dataset and metric: |bf16 mean - fp32 mean| <= the tolerance."""
    from benchmarks.em3_parity import PARITY_METRICS, TOLERANCE

    return [target(f"{name}_em3_bf16_vs_fp32_{metric}_abs_difference",
                   abs(row[metric]["difference"]), "<=", TOLERANCE)
            for name, row in summary.items() for metric in PARITY_METRICS]


def update_parity(parity: dict | None) -> int:
    """Rewrites results/em3_speed.json with ``parity`` (and its targets) in place of the
    recorded parity, keeping the timings."""
    from benchmarks.common import RESULTS_DIR

    path = RESULTS_DIR / "em3_speed.json"
    out = json.loads(path.read_text())
    out["targets"] = [t for t in out["targets"] if "_bf16_vs_fp32_" not in t["name"]]
    if parity is not None:
        out["targets"] += parity_targets(parity["summary"])
    out["parity"] = parity
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, indent=2) + "\n")
    tmp.replace(path)
    print(json.dumps(parity and parity["summary"], indent=1))
    print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="processes per dataset (default 2)")
    parser.add_argument("--datasets", nargs="+", default=["synth", "movielens"],
                        choices=["synth", "movielens"])
    parser.add_argument("--parity", type=Path, nargs="*", default=None,
                        help="em3_parity.py's results (default: benchmarks/.data/em3_parity*.json)")
    parser.add_argument("--data", action="append", default=[], metavar="NAME=DIR",
                        help="a prepared dataset directory for NAME (repeatable)")
    parser.add_argument("--update-parity", action="store_true",
                        help="keep the recorded timings; re-read the parity runs only")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))))
        return 0
    from benchmarks.em3_parity import RESULTS as PARITY_RESULTS
    from benchmarks.em3_parity import merged
    from benchmarks.quality_runs import dataset_dir

    paths = args.parity if args.parity is not None else sorted(
        PARITY_RESULTS.parent.glob(f"{PARITY_RESULTS.stem}*.json"))
    parity = merged([p for p in paths if p.is_file()])
    if args.update_parity:
        return update_parity(parity)
    given = dict(item.split("=", 1) for item in args.data)

    rows, components, targets, batches = [], [], [], {}
    load_before = os.getloadavg()
    for name in args.datasets:
        data = Path(given[name]) if name in given else dataset_dir(name)
        if data is None:
            continue
        runs = []
        for r in range(args.rounds):
            runs.append(in_subprocess({"data": str(data)}))
            print(f"{name} round {r + 1}/{args.rounds}: " + ", ".join(
                f"{v} {runs[-1][v]['cpu_s'] * 1e3:.1f} ms" for v in VARIANTS), flush=True)
        batches[name] = runs[0]["batch"]
        med = {v: {k: statistics.median(run[v][k] for run in runs) for k in ("wall_s", "cpu_s")}
               for v in VARIANTS}
        for v in VARIANTS:
            first = runs[0][v]
            rate = first["batch_size"] / med[v]["cpu_s"]
            rows.append({"dataset": name, "variant": v, "precision": first["precision"],
                         "step_cpu_ms": round(med[v]["cpu_s"] * 1e3, 2),
                         "step_wall_ms": round(med[v]["wall_s"] * 1e3, 2),
                         "samples_per_s": round(rate, 1),
                         "samples_per_s_wall": round(first["batch_size"] / med[v]["wall_s"], 1),
                         "speedup_vs_before": round(med["before"]["cpu_s"] / med[v]["cpu_s"], 3),
                         "mflops_per_sample": round(first["flops_per_sample"] / 1e6, 3),
                         "peak_gflops": round(statistics.median(run[v]["peak"] for run in runs)
                                              / 1e9, 1),
                         "mfu": round(first["flops_per_sample"] * rate / statistics.median(
                             run[v]["peak"] for run in runs), 4)})
        for v in ("before", "shipped"):
            parts = {k: statistics.median(run[v]["components"][k] for run in runs)
                     for k in COMPONENTS}
            total = sum(parts.values())
            for k, s in parts.items():
                components.append({"dataset": name, "variant": v, "component": k,
                                   "cpu_ms": round(s * 1e3, 2), "share": round(s / total, 3)})
            components.append({"dataset": name, "variant": v, "component": "sum of parts",
                               "cpu_ms": round(total * 1e3, 2), "share": 1.0})
        by = {r["variant"]: r for r in rows if r["dataset"] == name}
        targets.append(target(f"{name}_em3_shipped_vs_before_speedup",
                              by["shipped"]["speedup_vs_before"], ">=", MIN_SPEEDUP))
        # The shipped step is float32 (content.cpu_precision "auto"): MFU against that peak.
        targets.append(target(f"{name}_em3_shipped_mfu", by["shipped"]["mfu"], ">=", MIN_MFU))
        if name == "synth":
            targets.append(target("synth_em3_shipped_vs_id_only_throughput",
                                  by["shipped"]["samples_per_s"] / by["id_only"]["samples_per_s"],
                                  ">=", MIN_ID_RATIO))
    if parity is not None:
        targets += parity_targets(parity["summary"])
    print_table(rows, ["dataset", "variant", "precision", "step_cpu_ms", "step_wall_ms",
                       "samples_per_s", "speedup_vs_before", "mflops_per_sample", "mfu"])
    print_table(components, ["dataset", "variant", "component", "cpu_ms", "share"])
    load_after = os.getloadavg()
    note = ("em3 and id_only presets (default tiny towers), 1 intra-op thread, batch of the "
            "preset, pre-built batches; step = forward + loss + backward (fused sparse "
            "optimizer inside) + clip + dense optimizer step. samples_per_s and mfu use the "
            "step's thread CPU time (the machine is shared: wall clock under load measures the "
            "scheduler); samples_per_s_wall is the wall-clock figure. 1-minute load average "
            f"before/after: {load_before[0]:.1f}/{load_after[0]:.1f}.")
    path = write_results("em3_speed", rows, targets, command="python benchmarks/em3_speed.py",
                         extra={"components": components, "batches": batches,
                                "parity": parity,
                                "config": {"warmup": WARMUP, "steps": STEPS, "repeats": REPEATS,
                                           "rounds": args.rounds},
                                "note": note})
    print(note)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
