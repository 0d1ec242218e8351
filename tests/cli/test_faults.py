"""The pipeline under faults, on the real parts: a stack whose S3 dies during a run, two runs
started together on one workspace, and the stack's files that hold its keys."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from components.devstack import stack
from tests.conftest import tiny_config

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "components" / "configs" / "tiny.yaml"
CLI = [sys.executable, "-m", "components.cli.main", "--config", str(TINY)]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "PROMETHEUS_MULTIPROC_DIR") and not k.startswith("AWS_")}
    return {**env, **extra}


def _world_readable_secrets(root: Path, secret: str) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if not path.is_file() or path.stat().st_mode & 0o077 == 0:
            continue
        try:
            if secret.encode() in path.read_bytes():
                found.append(f"{path} {oct(path.stat().st_mode)[-3:]}")
        except OSError:
            continue
    return found


def test_s3_killed_during_a_stack_run_fails_fast_naming_s3_and_leaves_no_running_mlflow_run(tmp_path):
    ws = tmp_path / "ws"
    cfg = tiny_config(ws)
    state = stack.up(cfg, stack.StackPorts.free(), timeout_s=120)
    try:
        # The stack's keys: no file that holds the secret is readable by anyone else.
        secret = state["s3"]["secret_key"]
        assert _world_readable_secrets(ws, secret) == []
        assert stack.state_path(cfg).stat().st_mode & 0o777 == 0o600

        from mlflow import MlflowClient

        client = MlflowClient(state["services"]["mlflow"]["url"])

        def mlflow_runs() -> list:
            return client.search_runs([e.experiment_id for e in client.search_experiments()])

        run = subprocess.Popen(
            [*CLI, "--workspace", str(ws), "run", "--stack", "--simulate-if-empty", "--epochs", "60"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=tmp_path,
            env=_env(),
            start_new_session=True,
        )
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(line.rstrip("\n") for line in run.stdout), daemon=True)
        reader.start()
        killed_at = None
        try:
            deadline = time.monotonic() + 400
            while time.monotonic() < deadline and run.poll() is None:
                # Kill S3 while the train step's MLflow run is open: mid-training.
                if any("train" in line and "started" in line for line in lines) and \
                        any(r.info.status == "RUNNING" for r in mlflow_runs()):
                    os.killpg(state["services"]["s3"]["pid"], signal.SIGKILL)
                    killed_at = time.monotonic()
                    break
                time.sleep(0.5)
            run.wait(timeout=300)
            reader.join(timeout=10)
        finally:
            if run.poll() is None:
                os.killpg(run.pid, signal.SIGKILL)
        text = "\n".join(lines)
        assert killed_at is not None, text[-3000:]
        took = time.monotonic() - killed_at
        assert run.returncode != 0, text[-3000:]
        assert took < 90, f"the run took {took:.0f} s to fail after S3 died:\n{text[-3000:]}"
        assert "S3 is not reachable at" in text, text[-3000:]
        runs = mlflow_runs()
        assert runs, "the train step had started an MLflow run"
        assert [(r.info.run_name, r.info.status) for r in runs if r.info.status == "RUNNING"] == []
        print(
            f"failed {took:.0f} s after S3 was killed; MLflow runs: {[(r.info.run_name, r.info.status) for r in runs]}"
        )
    finally:
        stack.down(cfg, timeout_s=5)


def test_two_runs_started_together_keep_two_intact_records(tmp_path):
    ws = tmp_path / "ws"
    gen = subprocess.run(
        [*CLI, "--workspace", str(ws), "data", "generate"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        env=_env(),
        timeout=300,
    )
    assert gen.returncode == 0, gen.stderr
    assert not (ws / "mlflow.db").exists()  # the MLflow store is created by the runs, together
    # In-process training: what two runs share is the workspace, its MLflow store and records, not Ray.
    runs = [subprocess.Popen([*CLI, "--workspace", str(ws), "--set", "train.num_workers=0", "run", "--epochs", "2",
                              "--summary",
                              str(tmp_path / f"summary-{i}.json")],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path, env=_env())
            for i in range(2)]
    outputs = [r.communicate(timeout=600)[0] for r in runs]
    for r, out in zip(runs, outputs):
        assert r.returncode == 0, out[-3000:]
    summaries = [json.loads((tmp_path / f"summary-{i}.json").read_text()) for i in range(2)]
    uris = [s["run_uri"] for s in summaries]
    assert uris[0] != uris[1]
    for s in summaries:
        assert s["status"] == "SUCCEEDED"
        record = json.loads((Path(s["run_uri"]) / "summary.json").read_text())
        assert record["run_uri"] == s["run_uri"]  # each run's own record describes that run
        train = json.loads((Path(s["run_uri"]) / "steps" / "train.json").read_text())
        assert train["model_version"] == s["model"]["version"]
    assert sorted(s["model"]["version"] for s in summaries) == ["1", "2"]
    assert not list(ws.rglob("*.tmp"))
