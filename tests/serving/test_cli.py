"""The serving commands: argument wiring, and `serve --workers 2` as a real process with shared metrics."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys

import httpx
import pytest

from components.cli import serve as cli
from components.cli import stack as stack_cli
from components.devstack.process import free_port
from components.serving import metric_names as m
from tests.serving.conftest import metric_value, wait_ready


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    p.add_argument("--config")
    p.add_argument("--workspace")
    p.add_argument("--set", action="append")
    sub = p.add_subparsers(dest="command", required=True)
    cli.add_parser(sub)
    stack_cli.add_parser(sub)
    return p


def test_parsers_register_the_commands():
    p = _parser()
    args = p.parse_args(["serve", "--port", "9999", "--model-uri", "models:/x@champion", "--workers", "2",
                         "--reload-interval", "5"])
    assert args.func is cli.cmd_serve and args.port == 9999 and args.workers == 2 and args.reload_interval == 5
    for action, func in (
        ("up", stack_cli.cmd_stack_up),
        ("down", stack_cli.cmd_stack_down),
        ("status", stack_cli.cmd_stack_status),
    ):
        assert p.parse_args(["stack", action]).func is func
    assert p.parse_args(["stack", "up", "--free-ports"]).free_ports


def test_serve_defaults_to_the_champion(tmp_path):
    from components.core.config import load_config
    from components.serving.settings import settings_from_config

    cfg = load_config(None, {"workspace": str(tmp_path)})
    settings = settings_from_config(cfg)
    assert settings.model_uri == "models:/servicetime@champion" and settings.model_path is None
    assert settings.tracking_uri.startswith("sqlite:///")
    assert settings_from_config(cfg, model_path="/b").tracking_uri is None


@pytest.mark.slow
def test_serve_with_two_workers_aggregates_metrics(trained, tmp_path):
    port = free_port()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "components.serving", "--workspace", str(trained.workspace),
                             "serve", "--port", str(port), "--model-path", str(trained.bundle), "--workers", "2"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, 90)
        with httpx.Client(base_url=url, timeout=10) as c:
            for _ in range(40):  # new connections, so both workers get requests
                r = httpx.post(f"{url}/predict", json={"stops": trained.stops(2)})
                assert r.status_code == 200
            text = c.get("/metrics").text
        assert metric_value(text, f"{m.PREDICTIONS}_total", source="model") == 80  # summed over workers
        assert metric_value(text, m.MODEL_LOADED) == 1  # the minimum over live workers
        assert metric_value(text, f"{m.MODEL_RELOADS}_total", result="ok") == 2  # one load per worker, both counted
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        rc = proc.wait(30)
        log.close()
    assert rc == 0, (tmp_path / "serve.log").read_text()[-3000:]
    assert "Finished server process" in (tmp_path / "serve.log").read_text()
