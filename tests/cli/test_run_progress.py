"""`servicetime run` as a person sees it: a short progress story, the failing step's own words,
and nothing left running when the run is killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from components.core.config import load_config
from components.devstack.process import free_port
from components.learn import tracking
from pipelines import local
from pipelines.progress import Progress

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "components" / "configs" / "tiny.yaml"
CLI = [sys.executable, "-m", "components.cli.main", "--config", str(TINY)]

SAMPLE = [
    "01:51:22.765 - INFO - Executing task \x1b[96m'ingest-op'\x1b[0m",
    '    "config_json": "{\\"workspace\\": ...}"',
    "01:51:23.580 - INFO - Task \x1b[96m'ingest-op'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m",
    "01:51:30.020 - INFO - Executing task \x1b[96m'train-op'\x1b[0m",
    "    01:51:37 INFO    components.learn.train: epoch 0  train_loss 0.6364  val_mae 91.4 s  (0.1 s)",
    "    01:51:37 INFO    components.learn.train: epoch 1  train_loss 0.5336  val_mae 87.1 s  (0.0 s)",
    "01:51:41.179 - INFO - Task \x1b[96m'train-op'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m",
    "01:51:41.181 - INFO - Executing task \x1b[96m'evaluate-op'\x1b[0m",
    "    ValueError: the test weeks hold no routes",
    "01:51:49.403 - INFO - Task \x1b[96m'evaluate-op'\x1b[0m finished with status \x1b[91mFAILURE\x1b[0m",
]


def test_progress_turns_the_runner_output_into_one_line_per_step():
    shown = []
    records = {"ingest": {"weeks": 12, "rows": 7397, "data_version": "2b9bb7ad57bcc878"},
               "train": {"best_val_mae_s": 87.1, "best_epoch": 1, "num_workers": 2, "model_version": "3"}}
    ticks = iter(range(100))
    p = Progress(lambda text, replace: shown.append(text), lambda: float(next(ticks)), records.get, epochs=2)
    for line in SAMPLE:
        p.feed(line)
    assert shown[1] == "  ok  ingest       1.0 s  12 weeks, 7,397 rows, data 2b9bb7ad"
    assert any("epochs [########################] 2/2  val MAE 87.1 s (best 87.1 s)" in s for s in shown)
    assert any(s.startswith("  ok  train") and "2 Ray workers, v3" in s for s in shown)
    assert shown[-1].startswith("  FAILED evaluate")
    tail = p.failure_tail()
    assert tail[0] == "--- last lines of evaluate ---" and tail[-1] == "    ValueError: the test weeks hold no routes"


@pytest.mark.slow
def test_a_tiny_run_prints_at_most_60_lines_and_keeps_the_rest_in_its_log(tmp_path):
    proc = subprocess.run([*CLI, "--workspace", str(tmp_path / "ws"), "run"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=600)
    lines = (proc.stdout + proc.stderr).splitlines()
    assert proc.returncode == 0, "\n".join(lines[-40:])
    assert len(lines) <= 60, f"{len(lines)} lines"
    assert "run SUCCEEDED" in proc.stdout and "  ok  evaluate" in proc.stdout
    assert not any('"config_json"' in line for line in lines)  # KFP's executor dumps are in the log only
    log = next((tmp_path / "ws" / "logs").glob("run-*.log")).read_text()
    assert "Executing task" in log and '"config_json"' in log

    # What the run did, from the summary it wrote (this is the suite's one end-to-end run of the
    # pipeline on KFP's local runner; Ray's multi-worker training is covered in test_training).
    summary = json.loads((tmp_path / "ws" / "summary.json").read_text())
    assert summary["steps_completed"] == ["ingest", "validate", "features", "train", "evaluate", "register", "deploy"]
    assert summary["rows"]["in"] == summary["rows"]["accepted"] + summary["rows"]["quarantined"]
    assert summary["metrics"]["candidate"]["mae"] < summary["metrics"]["baseline"]["mae"]
    assert summary["metrics"]["champion"] is None  # the first run has no champion to beat
    assert summary["verdict"]["blessed"] is True
    assert summary["route_kpi"]["candidate"]["delay_std_s"] < summary["route_kpi"]["baseline"]["delay_std_s"]
    art = summary["artifacts"]
    assert (Path(art["model_bundle"]) / "model.pt").exists()
    assert "BLESSED" in Path(art["evaluation_report"]).read_text()
    assert Path(art["features"], "train.npz").exists()
    markdown = list(Path(art["kfp_outputs"]).rglob("evaluate-op/report"))
    assert markdown and "data:image/png;base64," in markdown[0].read_text()  # self-contained for the KFP UI
    cfg = load_config(TINY, {"workspace": str(tmp_path / "ws")})
    tracking.setup(cfg)
    assert summary["model"]["version"] == tracking.alias_version(cfg, tracking.CHAMPION) == "1"

    # The model URI the summary prints is one that serves (MLflow 3 keeps a model under its own
    # logged-model id, so a runs:/ URI would not resolve).
    uri = summary["model"]["uri"]
    assert uri == f"models:/servicetime/{summary['model']['version']}"
    port = free_port()
    server = subprocess.Popen([*CLI, "--workspace", str(tmp_path / "ws"), "serve", "--model-uri", uri, "--port",
                               str(port)], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline, ready = time.monotonic() + 120, None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        assert ready is not None and ready.status_code == 200, server.stderr.read() if server.poll() else "not ready"
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
def test_a_failing_run_shows_the_failing_steps_error(tmp_path):
    root = tmp_path / "data"
    (root / "raw").mkdir(parents=True)
    (root / "raw" / "week_000_2024-01-01.parquet").write_bytes(b"PAR1 truncated in transit")
    proc = subprocess.run([*CLI, "--workspace", str(tmp_path / "ws"), "run", "--data-root", str(root)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 1
    # The unreadable week is a rejected batch (named, kept); with nothing else, validation stops the run.
    assert "  FAILED validate" in proc.stdout and "--- last lines of validate ---" in proc.stdout
    tail = proc.stdout.split("--- last lines of validate ---", 1)[1]
    assert "week_000_2024-01-01" in tail  # the step's own error names the file, not only "FAILED"
    assert proc.stdout.count("--- last lines of validate ---") == 1  # shown once


@pytest.mark.slow
def test_an_empty_given_data_root_is_an_error_not_a_simulation(tmp_path):
    proc = subprocess.run([*CLI, "--workspace", str(tmp_path / "ws"), "run", "--data-root", str(tmp_path / "typo")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and "no weekly batches under" in proc.stderr and "--simulate-if-empty" in proc.stderr
    assert not (tmp_path / "typo").exists()


@pytest.mark.slow
def test_sigkill_of_a_run_leaves_none_of_its_processes(tmp_path):
    from mlflow.tracking import MlflowClient

    token = uuid.uuid4().hex
    env = {**os.environ, local.RUN_TOKEN: token}
    cfg = load_config(None, {"workspace": str(tmp_path / "ws")})
    proc = subprocess.Popen([*CLI, "--workspace", str(tmp_path / "ws"), "run", "--workers", "1"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)

    def mine() -> list:
        client = MlflowClient(tracking.tracking_uri(cfg))
        experiment = client.get_experiment_by_name(cfg.tracking.experiment)
        return client.search_runs([experiment.experiment_id],
                                  filter_string=f"tags.`{tracking.RUN_TOKEN_TAG}` = '{token}'") if experiment else []

    try:
        deadline = time.monotonic() + 300
        for line in proc.stdout:  # wait until training (with its local Ray) is under way
            if "train     started" in line or time.monotonic() > deadline:
                break
        # ...and the train step's MLflow run is open (its imports take a while on a loaded machine).
        while not any(r.info.status == "RUNNING" for r in mine()) and time.monotonic() < deadline:
            time.sleep(1)
        time.sleep(4)
        assert local.marked(token), "the run should be running"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        # Within 5 s on an idle machine; a loaded 2-core CI machine once needed longer for Ray's last two.
        deadline = time.monotonic() + 20
        while local.marked(token) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert local.marked(token) == []
        # The step ended its MLflow run on SIGTERM, or else the process the watchdog leaves behind
        # (outside the run) ends it shortly after: none is left RUNNING.
        deadline = time.monotonic() + 30
        while True:
            runs = mine()
            running = [r.info.run_name for r in runs if r.info.status == "RUNNING"]
            if not running or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert runs and running == [], [(r.info.run_name, r.info.status) for r in runs]
    finally:
        proc.kill()
        local.stop_marked(token, grace_s=1)


def test_a_killed_runs_leftover_mlflow_runs_are_ended_from_outside_it(tmp_path):
    """What the watchdog of a SIGKILLed run starts: its runs still RUNNING end KILLED; the spec file goes."""
    import mlflow
    from mlflow.tracking import MlflowClient

    cfg = load_config(None, {"workspace": str(tmp_path / "ws")})
    tracking.setup(cfg)
    token = uuid.uuid4().hex
    run = mlflow.start_run(run_name="train", tags={tracking.RUN_TOKEN_TAG: token})  # a step killed mid-run
    other = mlflow.start_run(run_name="another run's", nested=True)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"config": cfg.model_dump_json()}))
    done = subprocess.run([sys.executable, "-m", "pipelines.local", "--end-orphans", str(spec), token],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    client = MlflowClient(tracking.tracking_uri(cfg))
    assert client.get_run(run.info.run_id).info.status == "KILLED"
    assert client.get_run(other.info.run_id).info.status == "RUNNING"  # not this run's: left alone
    assert not spec.exists()
    mlflow.end_run()
    mlflow.end_run()
