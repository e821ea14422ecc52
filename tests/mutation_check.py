"""Mutation check: break each decision users trust, one at a time, and see a test fail.

    .venv/bin/python tests/mutation_check.py                # HEAD, every mutation
    .venv/bin/python tests/mutation_check.py --worktree     # the working tree as it is now
    .venv/bin/python tests/mutation_check.py --only cic_false_negative_mask --no-record

The repository is never mutated in place: the files of ``--rev`` (default HEAD; ``git archive``)
or of the working tree (``--worktree``: tracked and untracked, not ignored) are copied into a
temporary directory, and every test run happens there with this interpreter (the copy's
packages come first on ``sys.path``, ahead of the editable install). First the relevant test
files run unmutated and must pass; then each mutation replaces one exact snippet of source
(which must occur exactly once, else the check stops: the list is stale), runs its test files
with ``-x`` and restores the file. A mutation is *caught* when pytest reports failed tests
(exit status 1); any other outcome is a miss. The result is printed and written to
``tests/mutation_check.json`` (``--no-record`` skips that); the exit status is 0 only when every
mutation is caught. docs/testing.md ("Mutation check") holds the list and the last result.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "tests" / "mutation_check.json"
TIMEOUT_S = 900  # per pytest run


@dataclass(frozen=True)
class Mutation:
    name: str
    what: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


MUTATIONS = (
    Mutation(
        "selection_p_value", "remove the p-value condition in selection (promote on gain alone)",
        "recsys/runs/selection.py",
        '    if p >= alpha:\n'
        '        return "kept", f"not significant (p = {p:.4g} ≥ alpha = {alpha:g})"\n',
        "",
        ("tests/recsys/test_selection.py",)),
    Mutation(
        "early_stop_logloss_sign", "invert the logloss sign in early stopping (higher loss = better)",
        "recsys/training/train.py",
        'return None if value is None else (-value if name == "logloss" else value)',
        'return None if value is None else value',
        ("tests/recsys/test_early_stopping.py",)),
    Mutation(
        "test_uses_latest_checkpoint", "score test with the latest instead of the best checkpoint",
        "recsys/training/train.py",
        "best = latest_checkpoint(self.run_dir / CHECKPOINTS_DIR / BEST)",
        "best = latest_checkpoint(self.run_dir / CHECKPOINTS_DIR)",
        ("tests/recsys/test_early_stopping.py",)),
    Mutation(
        "retention_censoring_mask", "drop the censoring mask of the retention labels",
        "data/loader.py",
        "self._masks[name] = frame[name].is_not_null().to_numpy()",
        "self._masks[name] = np.ones(frame.height, dtype=bool)",
        ("tests/data/test_loader.py",)),
    Mutation(
        "history_same_timestamp", "let histories include same-timestamp rows",
        "data/sequences.py",
        'first_of_run(pl.col("_before"), "user_id", "ts").alias("_seen")',
        'pl.col("_before").alias("_seen")',
        ("tests/data/test_derived.py",)),
    Mutation(
        "cic_false_negative_mask", "skip CIC's false-negative mask (copies of an item as negatives)",
        "recsys/model/cic.py",
        '    logits = logits.masked_fill(same & off_diagonal, float("-inf"))\n',
        "",
        ("tests/recsys/test_cic.py",)),
    Mutation(
        "token_cache_staleness", "skip the token cache's staleness check (item/media fingerprint)",
        "multimodal/token_cache.py",
        'if fingerprint is not None and manifest["fingerprint"] != fingerprint:',
        "if False:",
        ("tests/multimodal/test_mm_token_cache.py",)),
)


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def copy_rev(rev: str, dest: Path) -> None:
    """The files of commit ``rev`` (what ``git archive`` exports) into ``dest``."""
    tar = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", rev], check=True,
                         capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        archive.extractall(dest, filter="data")


def copy_worktree(dest: Path) -> None:
    """The working tree's tracked and untracked files (not the ignored ones) into ``dest``."""
    listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "-co", "--exclude-standard"],
                            check=True, capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file():  # a tracked file deleted in the working tree is listed too
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def pytest(copy: Path, tests: list[str]) -> tuple[int, list[str], float]:
    """Runs pytest on ``tests`` inside ``copy``: (exit status, failed test ids, seconds)."""
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-rf", *tests]
    try:
        proc = subprocess.run(cmd, cwd=copy, capture_output=True, text=True, timeout=TIMEOUT_S,
                              env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    except subprocess.TimeoutExpired:
        return -1, [], time.perf_counter() - start
    failed = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("FAILED ")]
    if proc.returncode not in (0, 1):
        print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n", file=sys.stderr)
    return proc.returncode, failed, time.perf_counter() - start


def check_imports_come_from(copy: Path) -> None:
    """The copy's packages, not the editable install's, are what its tests import."""
    out = subprocess.run([sys.executable, "-c", "import data, multimodal, ranking, recsys; "
                          "print(recsys.__file__)"], cwd=copy, check=True, capture_output=True,
                         text=True).stdout.strip()
    if not Path(out).resolve().is_relative_to(copy.resolve()):
        raise SystemExit(f"mutation check: the copy imports recsys from {out}, not from {copy}")


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rev", default="HEAD", help="commit to check (default HEAD)")
    parser.add_argument("--worktree", action="store_true",
                        help="check the working tree's files instead of a commit")
    parser.add_argument("--only", nargs="+", choices=[m.name for m in MUTATIONS],
                        help="run only these mutations")
    parser.add_argument("--no-record", action="store_true",
                        help=f"do not write {RESULTS.relative_to(REPO)}")
    args = parser.parse_args(argv)
    mutations = [m for m in MUTATIONS if not args.only or m.name in args.only]
    source = "worktree" if args.worktree else _git("rev-parse", args.rev)
    started = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="mutation-check-") as tmp:
        copy = Path(tmp)
        if args.worktree:
            copy_worktree(copy)
        else:
            copy_rev(args.rev, copy)
        check_imports_come_from(copy)
        for m in mutations:  # a stale snippet stops the check before any test runs
            count = (copy / m.path).read_text().count(m.old)
            if count != 1:
                raise SystemExit(f"mutation {m.name}: its snippet occurs {count} times in "
                                 f"{m.path} (expected once); update MUTATIONS")

        files = sorted({t for m in mutations for t in m.tests})
        print(f"baseline ({source[:12]}): {' '.join(files)}", flush=True)
        rc, failed, baseline_s = pytest(copy, files)
        if rc != 0:
            print(f"baseline fails (pytest exit {rc}: {failed}); nothing to compare against",
                  file=sys.stderr)
            return 2

        rows = []
        for m in mutations:
            path = copy / m.path
            original = path.read_text()
            path.write_text(original.replace(m.old, m.new))
            try:
                rc, failed, seconds = pytest(copy, list(m.tests))
            finally:
                path.write_text(original)
            caught = rc == 1 and bool(failed)
            rows.append({"mutation": m.name, "what": m.what, "file": m.path,
                         "tests": list(m.tests), "caught": caught, "pytest_exit": rc,
                         "failed": failed, "seconds": round(seconds, 1)})
            print(f"{'caught' if caught else 'MISSED'}  {m.name:30s} {seconds:6.1f} s  "
                  f"{failed[0] if failed else f'pytest exit {rc}'}", flush=True)

    n_caught = sum(r["caught"] for r in rows)
    summary = f"{n_caught}/{len(rows)}"
    print(f"mutations caught: {summary} ({time.perf_counter() - started:.0f} s in all)")
    if not args.no_record:
        result = {
            "check": "mutation_check", "command": "python tests/mutation_check.py" + (
                " --worktree" if args.worktree else "" if args.rev == "HEAD" else f" --rev {args.rev}")
            + (f" --only {' '.join(args.only)}" if args.only else ""),
            "source": source, "date": dt.date.today().isoformat(),
            "machine": {"cpu": _cpu(), "cores": os.cpu_count(), "python": platform.python_version()},
            "caught": summary, "baseline_seconds": round(baseline_s, 1),
            "total_seconds": round(time.perf_counter() - started, 1), "rows": rows}
        tmp_out = RESULTS.with_suffix(".json.tmp")
        tmp_out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
        tmp_out.replace(RESULTS)
        print(f"wrote {RESULTS.relative_to(REPO)}")
    return 0 if n_caught == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
