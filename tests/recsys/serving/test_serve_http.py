"""``mlflow models serve`` answers real HTTP requests with a registered version (issue 26, item
2): the real server (``--env-manager local``, 127.0.0.1, a free port) on
``models:/NAME/<em3 version>``, a JSON request of logged test rows, and bad requests answered
400 naming the column (and the row, where recsys checks it). The server is always killed."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import polars as pl
import pytest

from recsys.serving.replay import replay_requests
from tests.recsys.serving.conftest import MODEL, Registry


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _wait_until_up(url: str, proc: subprocess.Popen, log, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            pytest.fail(f"mlflow models serve exited with {proc.returncode}:\n{log.read()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/ping", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    log.seek(0)
    pytest.fail(f"mlflow models serve did not answer /ping in {timeout} s:\n{log.read()[-3000:]}")


def test_mlflow_models_serve_answers_a_json_request(registry: Registry, world, tmp_path):
    run = registry.runs["em3"]
    rows = replay_requests(run, world, "test").head(40)
    expected = pl.read_parquet(run / "predictions" / "test.parquet")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    # The server execs `uvicorn` from PATH: the environment's bin directory, as when activated.
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    env = {**os.environ, "PATH": path, "MLFLOW_TRACKING_URI": registry.uri,
           "MLFLOW_REGISTRY_URI": registry.uri}
    with open(tmp_path / "server.log", "w+") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "models", "serve",
             "-m", f"models:/{MODEL}/{registry.versions['em3']}", "--env-manager", "local",
             "-h", "127.0.0.1", "-p", str(port)],
            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait_until_up(url, proc, log)
            records = rows.drop("row_id", "click", "like").to_dicts()
            status, answer = _post(url + "/invocations", {"dataframe_records": records})
            assert status == 200, answer
            served = pl.DataFrame(answer["predictions"])
            want = rows.select("row_id").join(expected, on="row_id", how="left")
            for head in [c for c in served.columns if c.startswith("pred_")]:
                assert (served[head] - want[head]).abs().max() <= 1e-5, head

            bad = [dict(r) for r in records[:3]]
            bad[2]["user_prior"] = {"rows": 2, "positives": 5}
            status, answer = _post(url + "/invocations", {"dataframe_records": bad})
            assert status == 400, answer
            assert "column 'user_prior', row 3" in answer["message"], answer
            # A null id makes the column floats, which MLflow's signature check refuses first.
            bad = [dict(r) for r in records[:2]]
            bad[1]["user_id"] = None
            status, answer = _post(url + "/invocations", {"dataframe_records": bad})
            assert status == 400 and "user_id" in answer["message"], answer
        finally:
            # The server and the workers it started: one process group.
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
