"""Fixtures for the model server: a real trained model in a real MLflow registry, real servers on loopback."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd
import pytest
import uvicorn

from components.core.config import Config
from components.devstack.process import free_port
from components.serving.api import FIELD_NAMES
from tests.conftest import tiny_config


@dataclass
class Trained:
    cfg: Config
    workspace: Path
    bundle: Path  # champion (version 1)
    bundle_v2: Path  # registered as challenger, not promoted
    tracking_uri: str
    model_name: str
    test: pd.DataFrame  # held-out stops with labels

    def stops(self, n: int, start: int = 0) -> list[dict]:
        """Held-out stops as a client sends them: planning columns, JSON types."""
        frame = self.test[list(FIELD_NAMES)].iloc[start : start + n]
        return json.loads(frame.to_json(orient="records", date_format="iso"))


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> Trained:
    """Tiny data through the real steps: two trained versions, the first one champion (about 15 s)."""
    from components.learn import tracking
    from components.steps.featurize import featurize
    from components.steps.ingest import generate_raw, ingest
    from components.steps.register import promote_step
    from components.steps.train import train_step
    from components.steps.validate import validate_dataset

    ws = tmp_path_factory.mktemp("serving-ws")
    cfg = tiny_config(ws, **{"train.num_workers": 0, "train.epochs": 2})
    root = ws / "data"
    generate_raw(cfg.data, str(root))
    ing = ingest(str(root), str(ws / "a" / "ingest"))
    val = validate_dataset(cfg, str(root), ing.data_version, str(ws / "a" / "validate"))
    featurize(cfg, str(ws / "a" / "validate" / "clean.parquet"), str(ws / "a" / "features"))
    v1 = train_step(cfg, ws / "a" / "features", ws / "a" / "model1", val.clean_version)
    promote_step(cfg, v1.model_version)
    cfg2 = cfg.model_copy(update={"train": cfg.train.model_copy(update={"seed": 99, "epochs": 1})})
    train_step(cfg2, ws / "a" / "features", ws / "a" / "model2", val.clean_version)
    assert tracking.alias_version(cfg, tracking.CHAMPION) == "1"
    test = pd.read_parquet(ws / "a" / "features" / "test.parquet")
    return Trained(cfg, ws, ws / "a" / "model1", ws / "a" / "model2", tracking.tracking_uri(cfg),
                   tracking.model_name(cfg), test)


class ThreadServer:
    """A real uvicorn server for one app, on a free loopback port, in a thread of the test process."""

    def __init__(self, app, port: int | None = None):
        self.app = app
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    access_log=False, lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, name=f"uvicorn-{self.port}", daemon=True)

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        assert not self.thread.is_alive(), "uvicorn did not stop"

    @property
    def state(self):
        return self.app.state.server


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def wait_ready(url: str, timeout: float = 60.0) -> dict:
    def ready():
        try:
            r = httpx.get(f"{url}/readyz", timeout=2)
        except httpx.HTTPError:
            return None
        return r.json() if r.status_code == 200 else None

    return wait_for(ready, timeout, 0.1, f"{url}/readyz")


def metric_value(text: str, metric: str, **labels: str) -> float | None:
    """The value of one sample in a Prometheus exposition (labels matched exactly, in any order)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == metric and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


@pytest.fixture
def serve_app():
    """Start apps as real servers; all stopped at the end of the test."""
    started: list[ThreadServer] = []

    def start(settings) -> ThreadServer:
        from components.serving.app import create_app

        server = ThreadServer(create_app(settings)).__enter__()
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.__exit__(None, None, None)


@pytest.fixture
def prometheus(tmp_path):
    """A real Prometheus (Debian's binary) on a free port, 1 s scrapes, tmp storage. Call with targets."""
    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    if not Path(binary).exists():
        pytest.skip("prometheus is not installed (apt-get install prometheus)")
    procs: list[subprocess.Popen] = []

    def start(targets: list[str]) -> str:
        from components.devstack.stack import prometheus_config

        port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(prometheus_config(targets, [], port, scrape_interval="1s"))
        log = open(tmp_path / "prometheus.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                 f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"

        def ready():
            if proc.poll() is not None:
                raise AssertionError(f"prometheus exited: {(tmp_path / 'prometheus.log').read_text()[-2000:]}")
            try:
                return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, 30, 0.2, "prometheus ready")
        return url

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
