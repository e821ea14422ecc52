"""The process-group span of a job: created for it, torn down before the process ends.

Each case runs in a fresh interpreter: tests/ranking's package fixture keeps a world of one
alive in the pytest process, and these cases are about who creates and destroys the group.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}

IN_ONE_PROCESS = """
import pytest
import torch.distributed as dist
from ranking.dist import init_process_group_from_env, process_group

# A group the job created is destroyed when the job ends ...
with process_group() as env:
    assert dist.is_initialized() and (env.world_size, env.rank) == (1, 0)
    dist.barrier()
assert not dist.is_initialized()

# ... and after an error too, which still propagates.
with pytest.raises(RuntimeError, match="boom"), process_group():
    raise RuntimeError("boom")
assert not dist.is_initialized()

# A group that existed before the job (a caller's) is left alive.
outer = init_process_group_from_env()
with process_group() as env:
    assert env == outer
assert dist.is_initialized()
dist.destroy_process_group()
print("ok")
"""


def test_the_job_destroys_only_the_group_it_created():
    proc = subprocess.run([sys.executable, "-c", IN_ONE_PROCESS], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "ok"


@pytest.mark.slow
def test_two_ranks_leave_together_after_one_lags(tmp_path):
    # Rank 1 finishes first while rank 0 still works, as in training where rank 0 writes the
    # predictions: both get through the teardown and exit 0, with the collective's result.
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent("""
        import time
        import torch, torch.distributed as dist
        from ranking.dist import process_group
        with process_group() as env:
            t = torch.ones(4) * (env.rank + 1)
            dist.all_reduce(t)
            if env.rank == 0:
                time.sleep(2)
            print(f"rank {env.rank} sum {float(t.sum())}", flush=True)
        assert not dist.is_initialized()
    """))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node=2", str(script)], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rank 0 sum 12.0" in proc.stdout and "rank 1 sum 12.0" in proc.stdout
