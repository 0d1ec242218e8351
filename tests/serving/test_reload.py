"""Following the champion alias in a real MLflow registry: a promotion is picked up without a failed request."""

from __future__ import annotations

import threading

import httpx
import pytest

from components.learn import tracking
from components.serving import metric_names as m
from components.serving.settings import ServerSettings
from tests.serving.conftest import metric_value, wait_for, wait_ready

pytestmark = pytest.mark.slow


def test_alias_move_is_served_without_dropping_requests(serve_app, trained):
    cfg = trained.cfg
    uri = f"models:/{trained.model_name}@{tracking.CHAMPION}"
    server = serve_app(ServerSettings(model_uri=uri, tracking_uri=trained.tracking_uri, reload_interval_s=0.3))
    ready = wait_ready(server.url)
    assert ready["version"] == "1" and ready["alias"] == "champion"
    stops = trained.stops(20)

    answers: list[tuple[int, str | None, set]] = []
    stop = threading.Event()

    def traffic():
        with httpx.Client(base_url=server.url, timeout=10) as c:
            while not stop.is_set():
                r = c.post("/predict", json={"stops": stops})
                body = r.json()
                answers.append((r.status_code, body.get("model_version"),
                                {p["source"] for p in body.get("predictions", [])}))

    thread = threading.Thread(target=traffic)
    thread.start()
    try:
        tracking.setup(cfg)
        tracking.promote(cfg, "2")
        wait_for(lambda: any(a[1] == "2" for a in answers), 30, what="version 2 in responses")
        n = len(answers)
        wait_for(lambda: len(answers) > n + 5, 10, what="more traffic after the swap")
        stop.set()
        thread.join(15)
        # Read the server's view before the alias is restored (it polls every 0.3 s).
        text = httpx.get(f"{server.url}/metrics").text
        ready_after = httpx.get(f"{server.url}/readyz").json()
    finally:
        stop.set()
        thread.join(15)
        tracking.promote(cfg, "1")  # leave the session's registry as it was
    assert all(a[0] == 200 and a[2] == {"model"} for a in answers), [a for a in answers if a[0] != 200][:3]
    versions = [a[1] for a in answers]
    assert versions[0] == "1" and versions[-1] == "2"
    assert versions == sorted(versions)  # one swap: never back to the old model
    assert metric_value(text, m.MODEL_INFO, name=trained.model_name, version="2", alias="champion") == 1
    assert metric_value(text, m.MODEL_INFO, version="1") is None  # the old series is gone
    assert metric_value(text, f"{m.MODEL_RELOADS}_total", result="ok") == 2
    assert ready_after["version"] == "2"


def test_shutdown_stops_the_alias_poller(trained):
    from components.serving.app import create_app
    from tests.serving.conftest import ThreadServer

    settings = ServerSettings(model_uri=f"models:/{trained.model_name}@{tracking.CHAMPION}",
                              tracking_uri=trained.tracking_uri, reload_interval_s=0.2)
    with ThreadServer(create_app(settings)) as server:
        wait_ready(server.url)
        assert server.state.holder.running
    assert not server.state.holder.running
