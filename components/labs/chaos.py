"""How ML breaks, hands on: break one part of the system on purpose and check that it holds.

Each ``Scenario`` states what it breaks, the outcome the system promises, and the
lecture's and the paper's names for that kind of failure (``SCENARIOS`` is the one
table: ``servicetime chaos list`` and notebook 8 print it from here). The lecture
names the paper's finding in two kinds: failures "in ML-specific ways" and failures
"in any of the typical large-scale distributed systems ways"; its three qualities
(velocity, validation, versioning) say what catches each one.

``run_scenario`` runs one scenario in a child process of its own session, in a
temporary workspace, with a marker in the environment of everything it starts:
afterwards the group and every marked process are stopped, and "nothing left
running" is itself one of the checks. A scenario returns ``Check``s (what was
expected, whether it held, the evidence); the outcome passes only when all hold.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from components.core.config import Config
from components.devstack.process import pids_with_env

TOKEN_ENV = "SERVICETIME_CHAOS_TOKEN"  # not the pipeline's run token: a run inside a scenario stops only its own
OUTCOME_FILE = "outcome.json"
OUTCOMES_FILE = "chaos-outcomes.json"  # a lab folder's scenarios, read by the lab's receipt
LEFTOVER_GRACE_S = 20.0  # Ray's processes take a while to go after ray.shutdown()
S3_FAIL_WITHIN_S = 90.0
# Leaked into a scenario, these would point it at the user's own MLflow or S3 instead of its workspace.
_FOREIGN_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_S3_ENDPOINT_URL")


# --- the table ---------------------------------------------------------------------------

PAPER_KINDS = ("ML-specific", "distributed systems")  # the paper's two kinds, as the lecture names them
QUALITIES = ("velocity", "validation", "versioning")  # the lecture's three Vs
LECTURE_AREAS = ("scale", "data", "privacy, fairness, interpretability", "system type", "objective")


@dataclass(frozen=True)
class Check:
    what: str
    passed: bool
    evidence: str


@dataclass
class Context:
    """What a scenario gets: its config (workspace = a fresh temporary folder) and a way to narrate."""

    cfg: Config
    workspace: Path

    def say(self, text: str) -> None:
        print(f"  . {text}", flush=True)


@dataclass(frozen=True)
class Scenario:
    name: str
    breaks: str  # what is broken on purpose
    expected: str  # what the system promises instead
    lecture: str  # the lecture's production difference it belongs to (LECTURE_AREAS)
    quality: str  # which of the three Vs catches it (QUALITIES)
    paper: str  # the paper's kind, as the lecture names it (PAPER_KINDS)
    minutes_tiny: float  # rough wall time on the tiny config, two shared cores
    run: Callable[[Context], list[Check]] = field(repr=False, compare=False)


@dataclass
class Outcome:
    scenario: str
    expected: str
    checks: list[Check]
    seconds: float
    workspace: str | None = None
    log_tail: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    def to_dict(self) -> dict:
        return {"scenario": self.scenario, "expected": self.expected, "passed": self.passed,
                "seconds": round(self.seconds, 1), "workspace": self.workspace,
                "checks": [asdict(c) for c in self.checks], "log_tail": self.log_tail}


# --- shared preparation ------------------------------------------------------------------


def _quick(cfg: Config, epochs: int = 3) -> Config:
    """A champion is a means here, not the subject: in-process training, a few epochs."""
    train = cfg.train.model_copy(update={"num_workers": 0, "epochs": min(cfg.train.epochs, epochs), "use_tuned": False})
    return cfg.model_copy(update={"train": train})


def _raw_data(ctx: Context) -> str:
    from components.steps.ingest import generate_raw

    root = str(ctx.workspace / "data")
    names = generate_raw(ctx.cfg.data, root)
    ctx.say(f"simulated {len(names)} weekly batches under {root}/raw")
    return root


def _features(ctx: Context) -> Path:
    """Data through the pipeline's own steps up to the features (clean weeks only)."""
    from components.steps.featurize import featurize
    from components.steps.ingest import ingest
    from components.steps.validate import validate_dataset

    root = _raw_data(ctx)
    steps = ctx.workspace / "steps"
    version = ingest(root, steps / "ingest")["data_version"]
    validate_dataset(ctx.cfg, root, version, steps / "validate", fail_on_rejected=False)
    featurize(ctx.cfg, steps / "validate" / "clean.parquet", steps / "features")
    return steps / "features"


@dataclass(frozen=True)
class Champion:
    cfg: Config
    features: Path
    name: str
    version: str
    bundle: Path


def _champion(ctx: Context) -> Champion:
    """A trained, registered model with the champion alias on it (the workspace's own MLflow)."""
    from components.steps.register import promote_step
    from components.steps.train import train_step

    cfg = _quick(ctx.cfg)
    features = _features(ctx)
    trained = train_step(cfg, features, ctx.workspace / "steps" / "model-v1", "chaos")
    promote_step(cfg, trained["model_version"])
    ctx.say(f"champion: {trained['model_name']} version {trained['model_version']}")
    return Champion(cfg, features, trained["model_name"], trained["model_version"], Path(trained["bundle"]))


def _stored_files(cfg: Config, name: str, version: str) -> Path:
    """The folder where the registry keeps a version's files (local artifact store)."""
    from mlflow import MlflowClient

    from components.core.storage import local_path
    from components.learn import tracking

    tracking.setup(cfg)
    uri = MlflowClient().get_model_version_download_uri(name, version)
    if not uri.startswith(("file:", "/")):
        raise RuntimeError(f"version {version}'s files are not on local disk ({uri})")
    return local_path(uri)


# --- scenarios: data ---------------------------------------------------------------------


def _newest_week(root: str) -> tuple[str, str, list[str]]:
    """(name, URI) of the newest batch in the landing zone, and every batch name: a weekly run meets the newest."""
    from components.data.datasets import DatasetStore

    store = DatasetStore(root)
    names = store.raw_batches()
    return names[-1], store.raw_uri(names[-1]), names


def feed_bug(ctx: Context) -> list[Check]:
    """One week's labels arrive in minutes (``components.flows.loop._corrupt``): rejected, every row kept."""
    from components.core.storage import Storage, join
    from components.flows.loop import _corrupt
    from components.steps.ingest import ingest
    from components.steps.validate import ValidationFailed, validate_dataset

    storage = Storage()
    root = _raw_data(ctx)
    name, uri, _ = _newest_week(root)
    corrupted = _corrupt(storage.read_parquet(uri))
    storage.write_parquet(uri, corrupted)
    ctx.say(f"week {name}: service_time_s divided by 60 (the feed now sends minutes)")
    version = ingest(root, ctx.workspace / "ingest")["data_version"]
    try:
        validate_dataset(ctx.cfg, root, version, ctx.workspace / "validate")
        stopped = Check("the run stops at validation", False, "validate_dataset accepted the dataset")
    except ValidationFailed as exc:
        stopped = Check("the run stops at validation, naming the week and the reason",
                        name in str(exc) and "minutes" in str(exc), str(exc)[:300])
    summary = json.loads((ctx.workspace / "validate" / "validation.json").read_text())
    quarantine = join(summary["quarantine_uri"], f"{name}.parquet")
    kept = storage.read_parquet(quarantine) if storage.exists(quarantine) else None
    same = kept is not None and sorted(kept["delivery_id"]) == sorted(corrupted["delivery_id"])
    others = [b for b in summary["batches"] if b["batch"] != name]
    return [
        stopped,
        Check("every row of the bad week is kept in quarantine", same,
              f"{0 if kept is None else len(kept)} of {len(corrupted)} rows in {quarantine}"
              + (f"; reason: {kept['quarantine_reason'].iloc[0][:100]}" if kept is not None and len(kept) else "")),
        Check("the other weeks are accepted", all(b["accepted"] for b in others),
              f"{sum(b['accepted'] for b in others)} of {len(others)} other weeks accepted; "
              f"rows in {summary['rows_in']} = accepted {summary['rows_accepted']} + quarantined {summary['rows_quarantined']}"),
    ]


def _resalt(key: str) -> str:
    """The upstream system rotated its hashing salt: the same customer, a new key."""
    return hashlib.sha256(b"rotated-salt-" + str(key).encode()).hexdigest()[:16]


def _mentions_customers(messages: list[str]) -> list[str]:
    return [m for m in messages if re.search(r"customer[ _]?key|customers", m, re.IGNORECASE)]


def resalted_keys(ctx: Context) -> list[Check]:
    """The newest week's customer keys are re-salted: every customer looks new; validation must say so."""
    from components.core.storage import Storage
    from components.steps.ingest import ingest
    from components.steps.validate import validate_dataset

    storage = Storage()
    root = _raw_data(ctx)
    name, uri, names = _newest_week(root)
    frame = storage.read_parquet(uri)
    before = set(frame["customer_key"].astype(str))
    earlier = set().union(*(set(storage.read_parquet(uri.replace(name, n))["customer_key"].astype(str))
                            for n in names[:-1]))
    frame["customer_key"] = frame["customer_key"].map(_resalt)
    storage.write_parquet(uri, frame)
    known_before = len(before & earlier) / max(len(before), 1)
    known_after = len(set(frame["customer_key"]) & earlier) / max(len(before), 1)
    ctx.say(f"week {name}: customer keys re-salted; customers seen before: {known_before:.0%} -> {known_after:.0%}")
    version = ingest(root, ctx.workspace / "ingest")["data_version"]
    summary = validate_dataset(ctx.cfg, root, version, ctx.workspace / "validate", fail_on_rejected=False)
    by_batch = {b["batch"]: b for b in summary["batches"]}
    flagged = _mentions_customers(by_batch[name]["warnings"] + by_batch[name]["errors"])
    false_alarms = {b: _mentions_customers(r["warnings"] + r["errors"]) for b, r in by_batch.items() if b != name}
    false_alarms = {b: m for b, m in false_alarms.items() if m}
    return [
        Check("the re-salted week is flagged with a warning (or error) about customer keys", bool(flagged),
              flagged[0][:200] if flagged else
              f"no message about customer keys; the week's warnings: {by_batch[name]['warnings'][:3]}, "
              f"errors: {by_batch[name]['errors'][:3]} (known customers {known_before:.0%} -> {known_after:.0%})"),
        Check("normal weeks raise no customer-key message", not false_alarms,
              f"{len(by_batch) - 1} normal weeks checked" + (f"; flagged: {false_alarms}" if false_alarms else "")),
    ]


# --- scenarios: training and infrastructure -------------------------------------------------


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

    from components.learn.features import TRAIN, VAL, FeatureTransform
    from components.learn.train import CHECKPOINT_FILE, Arrays, load_state, net_config, train_with_ray

    features = _features(ctx)
    train = Arrays.from_bytes((features / TRAIN).read_bytes())
    net = net_config(ctx.cfg, FeatureTransform.load(features / "transform.json"), train)
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
    """``run --stack``: the stack's S3 server is SIGKILLed during training; then the stack restarts and the run is retried."""
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
            pass
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


# --- scenarios: deployment and serving ------------------------------------------------------


def _register_untrained(champ: Champion, ctx: Context) -> str:
    """A new version whose weights are a freshly initialised network: the export wrote the wrong state."""
    import mlflow
    import torch

    from components.learn import tracking
    from components.learn.bundle import NET, WEIGHTS
    from components.learn.model import NetConfig, ServiceTimeNet

    bundle = ctx.workspace / "steps" / "model-v2"
    shutil.copytree(champ.bundle, bundle)
    torch.manual_seed(champ.cfg.train.seed)
    net = NetConfig.from_dict(json.loads((bundle / NET).read_text()))
    torch.save(ServiceTimeNet(net).state_dict(), bundle / WEIGHTS)
    tracking.setup(champ.cfg)
    with mlflow.start_run(run_name="chaos-untrained-export"):
        version = tracking.register(champ.cfg, tracking.log_model(bundle), tags={"chaos": "untrained weights"})
    return version


def worse_canary(ctx: Context) -> list[Check]:
    """A promoted version is worse than its evaluation said: the local canary check fails and rolls back."""
    import pandas as pd

    from components.learn import tracking
    from components.learn.bundle import Predictor
    from components.steps.deploy import DeployFailed, canary_check, deploy_step
    from components.steps.register import promote_step

    champ = _champion(ctx)
    cfg = champ.cfg
    test = pd.read_parquet(champ.features / "test.parquet")
    evaluated = canary_check(Predictor.load(champ.bundle), test, float("inf"), 0.0)["mae"]
    good = deploy_step(cfg, champ.features, evaluated)
    ctx.say(f"version {champ.version} passes its canary: MAE {good['mae']:.1f} s (evaluated {evaluated:.1f} s)")
    bad = _register_untrained(champ, ctx)
    promote_step(cfg, bad)
    ctx.say(f"version {bad} promoted (its bundle holds untrained weights); deploying it")
    bad_mae = canary_check(Predictor.load(ctx.workspace / "steps" / "model-v2"), test, evaluated, 0.0)["mae"]
    try:
        deploy_step(cfg, champ.features, evaluated)
        failed = Check("the canary of the worse version fails", False, "deploy_step accepted it")
    except DeployFailed as exc:
        failed = Check("the canary of the worse version fails", f"version {bad}" in str(exc), str(exc)[:300])
    after = tracking.alias_version(cfg, tracking.CHAMPION)
    return [
        Check("the good version passes the same canary", not good["problems"],
              f"version {champ.version}: MAE {good['mae']:.1f} s vs evaluated {evaluated:.1f} s"),
        failed,
        Check("the worse version is clearly worse", bad_mae > evaluated * (1 + cfg.deploy.mae_tolerance),
              f"version {bad}: MAE {bad_mae:.1f} s vs evaluated {evaluated:.1f} s (tolerance {cfg.deploy.mae_tolerance:.0%})"),
        Check("the champion alias is back on the good version", after == champ.version,
              f"champion -> version {after}"),
    ]


def _serve(ctx: Context, cfg: Config, port: int, log: Path) -> subprocess.Popen:
    import yaml

    from components.learn import tracking

    config_file = ctx.workspace / "serve-config.yaml"
    config_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    cmd = [sys.executable, "-m", "components.serving", "--config", str(config_file), "--workspace", str(ctx.workspace),
           "serve", "--host", "127.0.0.1", "--port", str(port), "--reload-interval", "2",
           "--model-uri", f"models:/{tracking.model_name(cfg)}@{tracking.CHAMPION}"]
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ctx.workspace, start_new_session=True)


def _ready(url: str, proc: subprocess.Popen, timeout_s: float = 120.0) -> dict:
    """/readyz once the server answers (it answers after its first load attempt)."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the model server exited with {proc.returncode}")
        try:
            r = httpx.get(f"{url}/readyz", timeout=2.0)
            return {"status": r.status_code, **r.json()}
        except httpx.HTTPError:
            time.sleep(0.5)
    raise TimeoutError(f"the model server did not answer at {url} within {timeout_s:.0f} s")


def _sources(url: str, stops: list[dict]) -> list[str]:
    import httpx

    r = httpx.post(f"{url}/predict", json={"stops": stops}, timeout=30.0)
    r.raise_for_status()
    return [p["source"] for p in r.json()["predictions"]]


def champion_file_deleted(ctx: Context) -> list[Check]:
    """The champion's model file is deleted from the registry's store; the server restarts (a new pod)."""
    import pandas as pd

    from components.devstack.process import free_port, stop_process_group
    from components.learn.bundle import WEIGHTS
    from components.serving.api import FIELD_NAMES

    champ = _champion(ctx)
    test = pd.read_parquet(champ.features / "test.parquet")
    stops = json.loads(test[list(FIELD_NAMES)].head(5).to_json(orient="records", date_format="iso"))
    port, log = free_port(), ctx.workspace / "model-server.log"
    url = f"http://127.0.0.1:{port}"
    proc = _serve(ctx, champ.cfg, port, log)
    try:
        first = _ready(url, proc)
        before = _sources(url, stops)
        files = sorted(_stored_files(champ.cfg, champ.name, champ.version).rglob(WEIGHTS))
        for f in files:
            f.unlink()
        ctx.say(f"deleted {len(files)} {WEIGHTS} file(s) of version {champ.version} from the registry's store")
        held = _sources(url, stops)  # the running server keeps the model it loaded
    finally:
        stop_process_group(proc.pid, 10.0)
    ctx.say("model server restarted")
    proc = _serve(ctx, champ.cfg, port, log)
    try:
        after = _ready(url, proc)
        fallback = _sources(url, stops)
    finally:
        stop_process_group(proc.pid, 10.0)
    reason = str(after.get("reason", ""))
    return [
        Check("before: the server answers from the champion", first["status"] == 200 and set(before) == {"model"},
              f"/readyz {first['status']} version {first.get('version')}; sources {sorted(set(before))}"),
        Check("the file is gone from the registry's store", bool(files), f"{[str(f) for f in files][:2]}"),
        Check("the running server keeps the model it had loaded", set(held) == {"model"}, f"sources {sorted(set(held))}"),
        Check("after a restart it answers from the rules (source: fallback)", set(fallback) == {"fallback"},
              f"sources {sorted(set(fallback))}"),
        Check("and says so: /readyz is 503 with the load error", after["status"] == 503 and "failed to load" in reason,
              f"/readyz {after['status']}: {reason[:200]}"),
    ]


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("ray-worker-killed", "a Ray Train worker is SIGKILLed after the first epoch's checkpoint",
             "Ray starts a new worker and training resumes from the checkpoint; every epoch runs once",
             "scale", "versioning", "distributed systems", 1.5, ray_worker_killed),
    Scenario("feed-bug", "the newest weekly batch's labels arrive in minutes",
             "validation rejects that week and stops the run; every row of it is kept in quarantine",
             "data", "validation", "ML-specific", 0.3, feed_bug),
    Scenario("resalted-keys", "the newest week's customer keys are re-hashed with a new salt",
             "validation flags the week (customers no longer recognised); normal weeks stay clean",
             "privacy, fairness, interpretability", "validation", "ML-specific", 0.3, resalted_keys),
    Scenario("s3-gone", "the stack's S3 server is SIGKILLed while `run --stack` trains",
             f"the run fails within {S3_FAIL_WITHIN_S:.0f} s with an error naming S3; after a stack restart a retry "
             "succeeds and no MLflow run is left RUNNING",
             "system type", "velocity", "distributed systems", 6.0, s3_gone),
    Scenario("worse-canary", "a promoted version's weights are not the evaluated ones (an untrained network)",
             "its canary check fails against the evaluated MAE and the champion alias rolls back",
             "objective", "versioning", "ML-specific", 0.8, worse_canary),
    Scenario("champion-file-deleted", "the champion's model file is deleted from the registry's store",
             "a restarted server answers from the business rules (source: fallback) and /readyz says why",
             "system type", "versioning", "distributed systems", 1.0, champion_file_deleted),
)


def get(name: str) -> Scenario:
    for scenario in SCENARIOS:
        if scenario.name == name:
            return scenario
    raise KeyError(f"no chaos scenario {name!r}; known: {', '.join(s.name for s in SCENARIOS)}")


TABLE_COLUMNS = ("scenario", "what breaks", "expected", "lecture", "3 Vs", "paper", "min (tiny)")


def table_rows() -> list[tuple[str, ...]]:
    return [(s.name, s.breaks, s.expected, s.lecture, s.quality, s.paper, f"{s.minutes_tiny:g}") for s in SCENARIOS]


def render_table(markdown: bool = False) -> str:
    """The one table: each scenario against the lecture's and the paper's categories."""
    rows = table_rows()
    if markdown:
        lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"
    short = [(r[0], r[3], r[4], r[5], r[6]) for r in rows]
    head = ("scenario", "lecture", "3 Vs", "paper", "min (tiny)")
    widths = [max(len(x) for x in col) for col in zip(head, *short)]
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in short]
    out.append("")
    for s in SCENARIOS:
        out.append(f"{s.name}: breaks {s.breaks}; expected: {s.expected}")
    return "\n".join(out) + "\n"


def save_outcomes(outcomes: list[Outcome], folder: str | Path) -> Path:
    """Write the scenarios' outcomes (every check with its evidence) to ``folder/OUTCOMES_FILE``, atomically."""
    from components.core.storage import write_atomic  # here, not at the top: `chaos list` stays free of pandas

    path = Path(folder) / OUTCOMES_FILE
    write_atomic(path, json.dumps({"scenarios": [o.to_dict() for o in outcomes]}, indent=1).encode())
    return path


def load_outcomes(path: str | Path) -> list[Outcome]:
    """The outcomes ``save_outcomes`` wrote (an empty list for a file without any)."""
    saved = json.loads(Path(path).read_text())
    return [Outcome(o["scenario"], o["expected"], [Check(**c) for c in o["checks"]], o["seconds"], o.get("workspace"))
            for o in saved.get("scenarios", [])]


def render_outcome(outcome: Outcome) -> str:
    lines = [f"{outcome.scenario}: {'PASS' if outcome.passed else 'FAIL'} ({outcome.seconds:.0f} s)",
             f"  expected: {outcome.expected}"]
    for c in outcome.checks:
        lines.append(f"  [{'pass' if c.passed else 'FAIL'}] {c.what}: {c.evidence}")
    if not outcome.passed and outcome.log_tail:
        lines += ["  last lines of its log:", *(f"    {t}" for t in outcome.log_tail)]
    return "\n".join(lines)


# --- isolation: a child process, a marker, a temporary workspace ---------------------------------


def _marked(token: str) -> list[int]:
    """Live pids (other than this one) whose environment carries the scenario's marker."""
    return pids_with_env(TOKEN_ENV, token)


def _describe(pid: int) -> str:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        return f"{pid} {command[:100]}"
    except OSError:
        return str(pid)


def _kill(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _stop_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _leftovers(token: str, grace_s: float) -> list[str]:
    """What the scenario left running once it ended (given time to exit), then stopped: the check's evidence."""
    deadline = time.monotonic() + grace_s
    left = _marked(token)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = _marked(token)
    described = [_describe(p) for p in left]
    _kill(left, signal.SIGTERM)
    time.sleep(1.0 if left else 0.0)
    _kill(_marked(token), signal.SIGKILL)
    return described


def _child_env(token: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _FOREIGN_ENV and not k.startswith("AWS_")}
    return {**env, TOKEN_ENV: token, "PYTHONUNBUFFERED": "1", "MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK": "true"}


def run_scenario(name: str, cfg: Config, keep: bool = False, timeout_s: float = 2400.0,
                 echo: Callable[[str], None] | None = None, root: str | Path | None = None) -> Outcome:
    """Run one scenario in a child process and a fresh workspace (a temporary folder, under ``root`` if given);
    stop whatever it left; remove the workspace unless ``keep``; return the outcome."""
    scenario = get(name)
    echo = echo or (lambda text: print(text, flush=True))
    if root is not None:
        Path(root).mkdir(parents=True, exist_ok=True)
    workspace = Path(tempfile.mkdtemp(prefix=f"servicetime-chaos-{name}-", dir=root))
    spec = workspace / "spec.json"
    spec.write_text(json.dumps({"scenario": name,
                                "config": cfg.model_copy(update={"workspace": str(workspace)}).model_dump_json()}))
    token = uuid.uuid4().hex
    started = time.monotonic()
    child = subprocess.Popen([sys.executable, "-m", "components.labs.chaos", "--child", str(spec)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=workspace,
                             env=_child_env(token), start_new_session=True)
    timer = threading.Timer(timeout_s, _stop_group, args=(child.pid,))
    timer.start()
    tail: list[str] = []
    try:
        with open(workspace / "scenario.log", "w") as log:
            for line in child.stdout:
                log.write(line)
                tail = [*tail[-19:], line.rstrip("\n")]
                echo(line.rstrip("\n"))
        child.wait()
    finally:
        timer.cancel()
        if child.poll() is None:
            _stop_group(child.pid)
            child.wait()
        left = _leftovers(token, LEFTOVER_GRACE_S)
    seconds = time.monotonic() - started
    result = workspace / OUTCOME_FILE
    if result.exists():
        checks = [Check(**c) for c in json.loads(result.read_text())["checks"]]
    else:
        why = f"timed out after {timeout_s:.0f} s" if seconds >= timeout_s else f"exit status {child.returncode}"
        checks = [Check("the scenario ran to its end", False, f"no outcome: the scenario's process ended ({why})")]
    checks.append(Check("nothing left running", not left and not _marked(token),
                        f"left running and stopped: {left}" if left else "no process of the scenario outlived it"))
    outcome = Outcome(name, scenario.expected, checks, seconds, str(workspace) if keep else None, tail)
    if not keep:
        shutil.rmtree(workspace, ignore_errors=True)
    return outcome


def _child(spec_path: str) -> int:
    """In the child: run the scenario, write its checks (a crash is a failed check, with its reason)."""
    import traceback

    from components.core.config import config_from_json
    from components.core.logs import configure

    configure()
    spec = json.loads(Path(spec_path).read_text())
    cfg = config_from_json(spec["config"])
    scenario = get(spec["scenario"])
    print(f"{scenario.name}: {scenario.breaks}", flush=True)
    print(f"  expected: {scenario.expected}", flush=True)
    try:
        checks = scenario.run(Context(cfg, Path(cfg.workspace)))
    except Exception as exc:  # noqa: BLE001 (a scenario that crashes is a failed check, reported with its reason)
        traceback.print_exc()
        checks = [Check("the scenario ran to its end", False, f"{type(exc).__name__}: {str(exc)[:300]}")]
    Path(cfg.workspace, OUTCOME_FILE).write_text(json.dumps({"checks": [asdict(c) for c in checks]}, indent=1))
    return 0


if __name__ == "__main__" and sys.argv[1:2] == ["--child"]:
    raise SystemExit(_child(sys.argv[2]))
