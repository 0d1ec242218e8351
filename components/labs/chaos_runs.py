"""Chaos scenarios in training and infrastructure: a Ray worker killed, the S3 server gone mid-run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from components.labs.chaos_base import (
    S3_FAIL_WITHIN_S,
    Check,
    Context,
    prepared_features,
)

# Ray Train writes this beside the checkpoints once it has registered one: a checkpoint file
# alone is not enough (a worker killed between the file and the registration restarts from scratch).
RAY_CHECKPOINT_SNAPSHOT = "checkpoint_manager_snapshot.json"


def _checkpoint_registered(run_dir: Path) -> bool:
    try:
        return json.loads((run_dir / RAY_CHECKPOINT_SNAPSHOT).read_text()).get("latest_checkpoint_result") is not None
    except (OSError, ValueError):  # not written yet, or caught mid-write
        return False


def ray_worker_killed(ctx: Context) -> list[Check]:
    """SIGKILL one Ray Train worker after the first checkpoint: Ray restarts it and training resumes."""
    import ray

    from components.learn.features import TRAIN, TRANSFORM_FILE, VAL, FeatureTransform
    from components.learn.ray_train import CHECKPOINT_FILE, train_with_ray
    from components.learn.train import Arrays, load_state, net_config

    features = prepared_features(ctx)
    train = Arrays.from_bytes((features / TRAIN).read_bytes())
    net = net_config(ctx.cfg, FeatureTransform.load(features / TRANSFORM_FILE), train)
    # train.max_failures as configured: set it to 0 and the same kill ends the training.
    cfg = ctx.cfg.train.model_copy(update={"num_workers": 2, "epochs": 4, "patience": 10})
    pids, ckpt = ctx.workspace / "pids", ctx.workspace / "checkpoints"
    pids.mkdir()
    killed: dict[str, int] = {}

    def killer() -> None:  # the first checkpoint is registered, then rank 1 dies without warning
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not killed:
            pid_file = pids / "rank1.pid"
            if _checkpoint_registered(ckpt / "chaos-killed") and pid_file.exists():
                killed["pid"] = int(pid_file.read_text())
                os.kill(killed["pid"], signal.SIGKILL)
                print(f"  . SIGKILL to Ray Train worker rank 1 (pid {killed['pid']})", flush=True)
            time.sleep(0.2)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        result = train_with_ray(str(features / TRAIN), str(features / VAL), net, cfg, str(ckpt), "chaos-killed",
                                pid_dir=str(pids), slow_epoch_s=1.5)
    finally:
        ray.shutdown()
    thread.join(timeout=5)
    epochs = [int(h["epoch"]) for h in result.history]
    resumed = load_state(Path(result.extra["checkpoint_path"]) / CHECKPOINT_FILE).resumed
    now = int((pids / "rank1.pid").read_text())
    return [
        Check("a worker was killed mid-training", "pid" in killed, f"SIGKILL to pid {killed.get('pid')}"),
        Check("Ray Train started a new worker", bool(killed) and now != killed.get("pid"),
              f"rank 1 is now pid {now}"),
        Check("training resumed from its checkpoint, not from scratch", resumed is not None and resumed > 0,
              f"the final checkpoint says it resumed at epoch {resumed}"),
        Check("every epoch ran once and training finished", epochs == list(range(cfg.epochs)),
              f"epochs in the history: {epochs}; best val MAE {result.best_val_mae:.1f} s"),
    ]


def _reader(stream, lines: list[tuple[float, str]]) -> threading.Thread:
    def read() -> None:
        for line in stream:
            lines.append((time.monotonic(), line.rstrip("\n")))
            print(f"    | {line.rstrip()}", flush=True)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def _start_run(ctx: Context, config_file: Path, run_uri: str, summary: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "components.cli.main", "--config", str(config_file), "--workspace", str(ctx.workspace),
           "run", "--stack", "--simulate-if-empty", "--run-uri", run_uri, "--summary", str(summary)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ctx.workspace,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _stop_run(proc: subprocess.Popen) -> None:
    """SIGTERM first: the run's own handler stops its pipeline group."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _running_mlflow_runs(url: str) -> list[str]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=url)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, "attributes.status = 'RUNNING'") if experiments else []
    return [r.info.run_name or r.info.run_id for r in runs]


def s3_gone(ctx: Context) -> list[Check]:
    """``run --stack``: the stack's S3 server is SIGKILLed during training; then the stack restarts and the run
    is retried."""
    import yaml

    from components.core.storage import S3Settings, Storage
    from components.devstack import stack

    cfg = ctx.cfg
    config_file = ctx.workspace / "config.yaml"
    config_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    checks: list[Check] = []
    try:
        state = stack.up(cfg, stack.StackPorts.free())
        ctx.say(f"stack up: S3 {state['s3']['endpoint_url']}, MLflow {state['services']['mlflow']['url']}")
        s3 = Storage(S3Settings(state["s3"]["endpoint_url"], state["s3"]["access_key"], state["s3"]["secret_key"]))
        run_uri = f"s3://{state['s3']['buckets']['artifacts']}/runs/chaos-first"
        lines: list[tuple[float, str]] = []
        proc = _start_run(ctx, config_file, run_uri, ctx.workspace / "summary-first.json")
        reader = _reader(proc.stdout, lines)
        while proc.poll() is None and not s3.exists(f"{run_uri}/steps/features.json"):
            time.sleep(1.0)
        if proc.poll() is not None:
            reader.join(5)
            return [Check("the run reaches training before S3 goes", False,
                          f"the run ended first (exit {proc.returncode}): {[t for _, t in lines[-3:]]}")]
        os.killpg(state["services"]["s3"]["pid"], signal.SIGKILL)
        killed_at = time.monotonic()
        ctx.say("S3 server SIGKILLed (features written, training under way)")
        try:
            proc.wait(S3_FAIL_WITHIN_S + 60)
        except subprocess.TimeoutExpired:
            pass  # a run still going is this scenario's failure: the check below records it, then stops it
        took = time.monotonic() - killed_at
        still = proc.poll() is None
        _stop_run(proc)
        reader.join(5)
        after = [text for at, text in lines if at >= killed_at]
        naming = [t for t in after if re.search(r"\bS3\b", t)]
        checks.append(Check(f"the run fails within {S3_FAIL_WITHIN_S:.0f} s", not still and proc.returncode != 0
                            and took <= S3_FAIL_WITHIN_S,
                            f"still running after {took:.0f} s (stopped by the scenario)" if still else
                            f"exit {proc.returncode} {took:.0f} s after the kill"))
        checks.append(Check("its error names S3", bool(naming),
                            naming[0][:200] if naming else f"last lines: {after[-3:]}"))
        stack.down(cfg)
        state = stack.up(cfg, stack.StackPorts.free())  # the same workspace: weed finds its data again
        ctx.say("stack restarted; retrying the run")
        retry_uri = f"s3://{state['s3']['buckets']['artifacts']}/runs/chaos-retry"
        lines = []
        proc = _start_run(ctx, config_file, retry_uri, ctx.workspace / "summary-retry.json")
        reader = _reader(proc.stdout, lines)
        try:
            proc.wait(1800)
        finally:
            _stop_run(proc)
            reader.join(5)
        summary = ctx.workspace / "summary-retry.json"
        status = json.loads(summary.read_text()).get("status") if summary.exists() else None
        checks.append(Check("the retry after the restart succeeds", proc.returncode == 0 and status == "SUCCEEDED",
                            f"exit {proc.returncode}, status {status}"))
        stuck = _running_mlflow_runs(state["services"]["mlflow"]["url"])
        checks.append(Check("no MLflow run is left RUNNING", not stuck, f"RUNNING: {stuck or 'none'}"))
    finally:
        stack.down(cfg)
    return checks
