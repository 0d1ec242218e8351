"""`servicetime stack up|status|down` on free ports: real S3, MLflow, model server and Prometheus processes."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest

from components.devstack import services as service_procs
from components.devstack import stack
from components.devstack.process import group_alive
from components.serving import metric_names as m
from tests.conftest import tiny_config
from tests.serving.conftest import wait_for

pytestmark = pytest.mark.slow


def _cli(ws, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PROMETHEUS_MULTIPROC_DIR")}
    return subprocess.run([sys.executable, "-m", "components.serving", "--workspace", str(ws), "stack", *args],
                          capture_output=True, text=True, timeout=300, env=env)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return service_procs.zombie(pid)


def test_stack_up_status_down(tmp_path):
    ws = tmp_path / "ws"
    cfg = tiny_config(ws)
    up = _cli(ws, "up", "--free-ports", "--scrape-interval", "1s", "--timeout", "120")
    state = stack.read_state(cfg)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        services = state["services"]
        assert set(services) == set(stack.SERVICES)
        for name, s in services.items():
            assert s["url"] in up.stdout, name
        assert oct(stack.state_path(cfg).stat().st_mode)[-3:] == "600"

        status = _cli(ws, "status", "--json")
        assert status.returncode == 0, status.stdout + status.stderr
        assert "healthy" in status.stdout

        # Each part answers: S3 with the platform's buckets, MLflow, the server (fallback: no champion yet).
        env = stack.stack_env(state)
        assert env["MLFLOW_TRACKING_URI"] == services["mlflow"]["url"]
        from components.core.storage import S3Settings, Storage

        s3 = Storage(S3Settings(env["AWS_ENDPOINT_URL"], env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]))
        s3.write_bytes(f"{stack.data_root(state)}/probe.txt", b"ok")
        assert s3.read_bytes(f"{stack.data_root(state)}/probe.txt") == b"ok"
        assert httpx.get(f"{services['mlflow']['url']}/health").status_code == 200
        server = services["model_server"]["url"]
        assert httpx.get(f"{server}/readyz").status_code == 503
        r = httpx.post(f"{server}/predict", json={"stops": [{
            "route_id": "R1", "stop_index": 0, "delivered_at": "2024-03-11T08:55:00Z", "customer_key": "c1",
            "area_id": "A001", "area_type": "urban", "building_type": "house", "n_items": 20, "n_boxes": 3,
            "weight_kg": 12.5, "has_frozen": False, "driver_key": "d1", "driver_tenure_weeks": 10}]})
        assert r.status_code == 200 and r.json()["predictions"][0]["source"] == "fallback"

        # Prometheus scrapes the server with the rendered config and loaded the alert rules.
        prom = services["prometheus"]["url"]

        def scraped():
            body = httpx.get(
                f"{prom}/api/v1/query", params={"query": f'{m.FALLBACKS}_total{{reason="no_model"}}'}
            ).json()
            return body["data"]["result"] and float(body["data"]["result"][0]["value"][1]) >= 1

        wait_for(scraped, 30, 0.5, "prometheus to scrape the fallback count")
        rules = httpx.get(f"{prom}/api/v1/rules").json()["data"]["groups"]
        assert rules and any(r["name"] == "ServicetimeModelNotLoaded" for r in rules[0]["rules"])

        again = _cli(ws, "up", "--free-ports")
        assert again.returncode == 1 and "already running" in again.stderr
    finally:
        down = _cli(ws, "down")
    assert down.returncode == 0, down.stderr
    pids = [s["pid"] for s in state["services"].values()]
    wait_for(lambda: all(_gone(p) for p in pids), 20, 0.2, "every stack process to exit")
    assert not any(group_alive(p) for p in pids)  # whole process groups, not only the leaders
    status = _cli(ws, "status")
    assert status.returncode == 1 and "stopped" in status.stdout
