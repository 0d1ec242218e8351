"""A real Prometheus scrapes the real model server; the numbers come back through its HTTP API."""

from __future__ import annotations

import httpx
import pytest

from components.serving import metric_names as m
from components.serving.settings import ServerSettings
from tests.serving.conftest import wait_for, wait_ready

pytestmark = pytest.mark.slow


def query(prometheus_url: str, promql: str) -> list[dict]:
    body = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": promql}, timeout=5).json()
    assert body["status"] == "success", body
    return body["data"]["result"]


def test_prometheus_scrapes_the_server(serve_app, prometheus, trained):
    server = serve_app(ServerSettings(model_path=str(trained.bundle)))
    version = wait_ready(server.url)["version"]
    for _ in range(3):
        assert httpx.post(f"{server.url}/predict", json={"stops": trained.stops(7)}).status_code == 200
    prom = prometheus([f"127.0.0.1:{server.port}"])

    selector = f'{m.PREDICTIONS}_total{{job="{m.SCRAPE_JOB}",{m.LABEL_SOURCE}="model"}}'
    result = wait_for(lambda: query(prom, selector), 30, 0.5, "the first scrape")
    assert float(result[0]["value"][1]) == 21
    assert result[0]["metric"]["track"] == "stable"  # the label the rendered config adds
    up = query(prom, f'up{{job="{m.SCRAPE_JOB}"}}')
    assert up and up[0]["value"][1] == "1"
    info = query(prom, m.MODEL_INFO)
    assert [r["metric"]["version"] for r in info] == [version]
    psi = query(prom, f"max by ({m.LABEL_FEATURE}) ({m.INPUT_DRIFT_PSI})")
    assert {r["metric"][m.LABEL_FEATURE] for r in psi} >= {"n_items", "n_boxes", "weight_kg"}
