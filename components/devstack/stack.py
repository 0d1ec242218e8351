"""The local platform as plain processes (no Docker): S3, MLflow, the model server, Prometheus.

    servicetime stack up       start all four on loopback, wait until each is healthy
    servicetime stack status   pid, URL and health of each
    servicetime stack down     stop exactly the processes ``up`` recorded
    servicetime stack env      export lines for MLflow and S3 clients (``stack_env``)

* S3: SeaweedFS (``weed server -s3``, ``components.devstack.s3server``) with one access key,
  the platform's buckets created up front.
* MLflow: ``mlflow server`` on SQLite, artifacts proxied to ``s3://<artifacts bucket>/mlflow``.
* The model server: ``servicetime serve`` following ``models:/<name>@champion`` on that
  MLflow (it answers from the fallback rules until a champion exists).
* Prometheus: the config and alert rules rendered by ``components.render.monitoring``,
  scraping the model server.

Everything lives under ``<workspace>/stack``: data, logs, rendered configs and
``state.json`` (pids, process start times, ports, URLs, the S3 keys; mode 0600).
Every service starts in its own session, so its pid is its process group:
``down`` signals exactly those groups (SIGTERM, then SIGKILL after a timeout),
and only when the recorded start time still matches (a reused pid is left alone).
Ports default to ``platform.yaml``; tests pass free ones.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import yaml

from components.core.config import Config
from components.core.platform import platform
from components.core.storage import s3_client_env, write_atomic
from components.devstack.services import (
    StackError,
    alive,
    healthy,
    spawn,
    start_ticks,
    stop_service,
    wait_healthy,
)

STATE_FILE = "state.json"
STATE_VERSION = 1
SERVICES = ("s3", "mlflow", "model_server", "prometheus")  # start order; stopped in reverse
ACCESS_KEY = "servicetime"
REGION = "us-east-1"
SECRET_MODE = 0o600
# The MLflow server's own S3 client (botocore): few attempts, so a dead S3 turns into an error
# the pipeline's step sees within seconds instead of a long retry loop behind each request.
SERVER_S3_BUDGET = {"AWS_MAX_ATTEMPTS": "2", "AWS_RETRY_MODE": "standard"}



@dataclass(frozen=True)
class StackPorts:
    s3: int
    mlflow: int
    prometheus: int
    model_server: int

    @classmethod
    def from_platform(cls) -> StackPorts:
        p = platform().ports
        return cls(p.s3, p.mlflow, p.prometheus, p.model_server)

    @classmethod
    def free(cls) -> StackPorts:
        from components.devstack.process import free_port

        return cls(**{f.name: free_port() for f in fields(cls)})

    def replace(self, **ports: int | None) -> StackPorts:
        return replace(self, **{k: v for k, v in ports.items() if v})


def stack_dir(cfg: Config) -> Path:
    return Path(cfg.workspace).resolve() / "stack"


def state_path(cfg: Config) -> Path:
    return stack_dir(cfg) / STATE_FILE



# --- state -------------------------------------------------------------------------------


def read_state(cfg: Config) -> dict | None:
    path = state_path(cfg)
    return json.loads(path.read_text()) if path.exists() else None


def _write_state(cfg: Config, state: dict) -> None:
    # 0600 from its first byte: it holds the S3 secret key.
    write_atomic(state_path(cfg), json.dumps(state, indent=2).encode(), mode=SECRET_MODE)


def _client_budget() -> dict[str, str]:
    from components.learn.tracking import CLIENT_BUDGET

    return dict(CLIENT_BUDGET)


def stack_env(state: dict) -> dict[str, str]:
    """Environment for MLflow and S3 clients (``servicetime run``, notebooks) to use the stack."""
    s3 = state["s3"]
    return {
        "MLFLOW_TRACKING_URI": state["services"]["mlflow"]["url"],
        **s3_client_env(s3["endpoint_url"], s3["access_key"], s3["secret_key"], REGION),
        "MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK": "true",
        **_client_budget(),
    }


def data_root(state: dict) -> str:
    """Where ``servicetime run`` keeps datasets on the stack's S3."""
    return f"s3://{state['s3']['buckets']['data']}"


# --- the services ------------------------------------------------------------------------


def prometheus_config(targets: list[str], rules_files: list[str], port: int, scrape_interval: str | None = None) -> str:
    """``components.render.monitoring``'s config with static targets, pointed at this Prometheus's own port."""
    from components.render.monitoring import render_prometheus_config

    config = yaml.safe_load(render_prometheus_config(targets, rules_files, kubernetes_sd=False))
    for job in config["scrape_configs"]:
        if job["job_name"] == "prometheus":
            job["static_configs"] = [{"targets": [f"127.0.0.1:{port}"]}]
        if scrape_interval:
            job["scrape_interval"] = scrape_interval
    if scrape_interval:
        config["global"]["scrape_interval"] = config["global"]["evaluation_interval"] = scrape_interval
    return yaml.safe_dump(config, sort_keys=False)


def alert_rules() -> str:
    from components.render.monitoring import render_alert_rules

    return render_alert_rules()


def _create_buckets(endpoint_url: str, access_key: str, secret_key: str, buckets: list[str]) -> None:
    from urllib.parse import urlparse

    from minio import Minio

    client = Minio(urlparse(endpoint_url).netloc, access_key=access_key, secret_key=secret_key, secure=False,
                   region=REGION)
    for bucket in buckets:
        if not client.bucket_exists(bucket):
            client.make_bucket(bucket)


def _record(proc: subprocess.Popen, **info: Any) -> dict:
    return {"pid": proc.pid, "start_ticks": start_ticks(proc.pid), **info}


def up(cfg: Config, ports: StackPorts | None = None, timeout_s: float = 180.0,
       scrape_interval: str | None = None, reload_interval_s: float | None = None) -> dict:
    """Start S3, MLflow, the model server and Prometheus; return the recorded state.

    Refuses when a stack recorded in this workspace still runs. On any failure it
    stops what it had started and raises ``StackError``.
    """
    previous = read_state(cfg)
    if previous and any(alive(s) for s in previous.get("services", {}).values()):
        raise StackError(f"a stack is already running for this workspace ({state_path(cfg)}); "
                         "`servicetime stack down` first")
    ports = ports or StackPorts.from_platform()
    p = platform()
    root = stack_dir(cfg)
    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    root.chmod(0o700)  # the stack's files (keys, database, logs) are this user's alone
    secret_file = root / "s3-secret"
    if not secret_file.exists():  # one key per workspace, kept across up/down
        write_atomic(secret_file, secrets.token_hex(16).encode(), mode=SECRET_MODE)
    secret_file.chmod(SECRET_MODE)  # a key file from before this rule
    secret = secret_file.read_text().strip()
    state: dict[str, Any] = {
        "version": STATE_VERSION, "workspace": str(Path(cfg.workspace).resolve()), "started_at": time.time(),
        "ports": asdict(ports),
        "s3": {"endpoint_url": f"http://127.0.0.1:{ports.s3}", "access_key": ACCESS_KEY, "secret_key": secret,
               "buckets": p.buckets.model_dump()},
        "services": {},
    }
    try:
        _up_all(cfg, state, ports, root, logs, timeout_s, scrape_interval, reload_interval_s)
    except BaseException:
        _stop_all(state)
        _write_state(cfg, state)
        raise
    return state


def _up_all(cfg: Config, state: dict, ports: StackPorts, root: Path, logs: Path, timeout_s: float,
            scrape_interval: str | None, reload_interval_s: float | None) -> None:
    from components.devstack.s3server import start_s3_server
    from components.learn import tracking

    services = state["services"]
    s3 = state["s3"]
    base_env = {**os.environ, "MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK": "true"}
    for key in ("MLFLOW_TRACKING_URI", "PROMETHEUS_MULTIPROC_DIR"):
        base_env.pop(key, None)

    # S3: start_s3_server waits until a bucket can be written.
    try:
        server = start_s3_server(root / "weed", port=ports.s3, access_key=s3["access_key"],
                                 secret_key=s3["secret_key"], timeout=timeout_s)
    except (RuntimeError, TimeoutError) as exc:
        raise StackError(f"S3 (weed) did not start: {exc}") from exc
    services["s3"] = _record(server.process, port=ports.s3, url=s3["endpoint_url"], health=s3["endpoint_url"],
                             health_any_status=True, log=str(root / "weed" / "weed.log"))
    _write_state(cfg, state)
    _create_buckets(s3["endpoint_url"], s3["access_key"], s3["secret_key"], list(s3["buckets"].values()))
    s3_env = s3_client_env(s3["endpoint_url"], s3["access_key"], s3["secret_key"], REGION)

    # MLflow: SQLite metadata, artifacts proxied to S3 (clients need no S3 keys for them).
    mlflow_url = f"http://127.0.0.1:{ports.mlflow}"
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
           "--artifacts-destination", f"s3://{s3['buckets']['artifacts']}/mlflow", "--host", "127.0.0.1",
           "--port", str(ports.mlflow), "--workers", "1"]
    log = logs / "mlflow.log"
    # No server-side job runner (a pool of huey consumers): nothing here submits MLflow jobs.
    proc = spawn(cmd, log, {**base_env, **s3_env, **SERVER_S3_BUDGET, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
                  root)
    services["mlflow"] = _record(proc, port=ports.mlflow, url=mlflow_url, health=f"{mlflow_url}/health", log=str(log))
    _write_state(cfg, state)
    wait_healthy("mlflow", services["mlflow"], proc, timeout_s)

    # The model server, following the champion alias on that MLflow.
    server_url = f"http://127.0.0.1:{ports.model_server}"
    config_file = root / "config.yaml"
    # The stack's MLflow, whatever the config named (the config's URI wins over the environment).
    served = cfg.model_copy(update={"tracking": cfg.tracking.model_copy(update={"tracking_uri": mlflow_url})})
    config_file.write_text(yaml.safe_dump(served.model_dump(mode="json"), sort_keys=False))
    cmd = [sys.executable, "-m", "components.serving", "--config", str(config_file), "--workspace", cfg.workspace,
           "serve", "--host", "127.0.0.1", "--port", str(ports.model_server),
           "--model-uri", f"models:/{tracking.model_name(cfg)}@{tracking.CHAMPION}"]
    if reload_interval_s:
        cmd += ["--reload-interval", str(reload_interval_s)]
    log = logs / "model-server.log"
    proc = spawn(cmd, log, {**base_env, **s3_env, "MLFLOW_TRACKING_URI": mlflow_url}, root)
    services["model_server"] = _record(proc, port=ports.model_server, url=server_url, health=f"{server_url}/healthz",
                                       ready=f"{server_url}/readyz", log=str(log))
    _write_state(cfg, state)
    wait_healthy("model server", services["model_server"], proc, timeout_s)

    # Prometheus, with the rendered config and alert rules.
    prom_dir = root / "prometheus"
    prom_dir.mkdir(parents=True, exist_ok=True)
    rules = prom_dir / "alerts.yml"
    rules.write_text(alert_rules())
    config = prom_dir / "prometheus.yml"
    config.write_text(prometheus_config([f"127.0.0.1:{ports.model_server}"], [str(rules)], ports.prometheus,
                                        scrape_interval))
    prom_url = f"http://127.0.0.1:{ports.prometheus}"
    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    cmd = [binary, f"--config.file={config}", f"--storage.tsdb.path={prom_dir / 'data'}",
           f"--web.listen-address=127.0.0.1:{ports.prometheus}", "--web.enable-lifecycle"]
    log = logs / "prometheus.log"
    proc = spawn(cmd, log, base_env, prom_dir)
    services["prometheus"] = _record(proc, port=ports.prometheus, url=prom_url, health=f"{prom_url}/-/ready",
                                     config=str(config), log=str(log))
    _write_state(cfg, state)
    wait_healthy("prometheus", services["prometheus"], proc, timeout_s)


# weed can ignore SIGTERM for a long while: give it a short grace, then SIGKILL.
STOP_TIMEOUT_S = {"s3": 3.0}


def _stop_all(state: dict, timeout_s: float = 10.0) -> dict[str, str]:
    out = {}
    for name in reversed(SERVICES):
        service = state.get("services", {}).get(name)
        if service:
            out[name] = stop_service(service, min(timeout_s, STOP_TIMEOUT_S.get(name, timeout_s)))
    return out


def down(cfg: Config, timeout_s: float = 10.0) -> dict[str, str]:
    """Stop every recorded service (model server and Prometheus first, S3 last)."""
    state = read_state(cfg)
    if state is None:
        return {}
    outcome = _stop_all(state, timeout_s)
    state["stopped_at"] = time.time()
    _write_state(cfg, state)
    return outcome


def status(cfg: Config) -> dict:
    """Each service as its health endpoint answers now (a launcher that died while its server
    still serves is not "stopped"); the recorded pid is reported beside it, for ``down``."""
    state = read_state(cfg)
    if state is None:
        return {"state": None, "services": {}}
    report: dict[str, Any] = {"state": str(state_path(cfg)), "services": {}}
    for name in SERVICES:
        service = state["services"].get(name)
        if not service:
            continue
        ok = healthy(service["health"], service.get("health_any_status", False))
        launcher = alive(service)
        entry = {"pid": service["pid"], "running": ok or launcher, "launcher_alive": launcher, "url": service["url"],
                 "healthy": ok, "log": service["log"]}
        if "ready" in service and ok:
            entry["ready"] = healthy(service["ready"])
        report["services"][name] = entry
    return report


def render_status(report: dict) -> str:
    if not report.get("services"):
        return "no stack recorded in this workspace"
    lines = []
    for name, s in report["services"].items():
        health = "healthy" if s["healthy"] else ("running, unhealthy" if s["running"] else "stopped")
        if s["healthy"] and not s.get("launcher_alive", True):
            health += " (launcher pid gone)"
        if s.get("ready") is False:
            health += " (no model yet: fallback answers)"
        lines.append(f"{name:<13} pid {s['pid']:<8} {health:<20} {s['url']}")
    return "\n".join(lines)
