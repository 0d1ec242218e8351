"""The prediction log (delivery ids echoed and logged, nothing lost on a clean shutdown) and the API token."""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest

from components.serving.predlog import (
    DAY_PREFIX,
    PredictionLog,
    Served,
    log_files,
    read_log,
)
from components.serving.settings import ServerSettings
from tests.serving.conftest import wait_for, wait_ready


def _served(n: int, at: float, ids: bool = True) -> Served:
    cols = {"delivery_id": [f"D{at:.0f}-{i}" for i in range(n)] if ids else [None] * n,
            "route_id": ["R1"] * n, "stop_index": np.arange(n, dtype=float),
            "customer_key": ["c"] * n, "area_id": ["A1"] * n}
    seconds = np.linspace(100, 200, n)
    return Served(cols, seconds, seconds - 10, seconds + 10, np.zeros(n, dtype=bool), None, at)


def test_log_batches_by_size_and_day_and_loses_nothing_across_a_restart(tmp_path):
    root = str(tmp_path / "predictions")
    day1, day2 = 1_704_067_200.0, 1_704_067_200.0 + 86_400  # 2024-01-01, 2024-01-02 (UTC)
    first = PredictionLog(root, flush_rows=50, flush_s=60)
    first.start()
    for k in range(4):
        first.submit(_served(30, day1 + k))  # 120 rows: two size-triggered files, the rest on close
    first.submit(_served(5, day2))
    first.close()
    second = PredictionLog(root, flush_rows=10_000, flush_s=60)  # "after a restart": same root, new process state
    second.start()
    second.submit(_served(7, day2 + 1, ids=False))
    second.close()
    frame = read_log(root)
    assert len(frame) == 120 + 5 + 7
    assert first.written_rows == 125 and second.written_rows == 7 and first.dropped_rows == 0
    days = {f.split(DAY_PREFIX)[1].split("/")[0] for f in log_files(root)}
    assert days == {"2024-01-01", "2024-01-02"}
    assert len(log_files(root, days=("2024-01-01",))) >= 2  # size-triggered flushes happened before close
    assert frame["delivery_id"].notna().sum() == 125 and frame["delivery_id"].nunique() == 125
    assert set(frame["source"]) == {"fallback"} and not frame["history_found"].any()


def test_time_triggered_flush_and_a_full_queue_drops_instead_of_blocking(tmp_path):
    root = str(tmp_path / "p")
    writer = PredictionLog(root, flush_rows=10_000, flush_s=0.2)
    writer.start()
    writer.submit(_served(3, time.time()))
    wait_for(lambda: len(read_log(root)) == 3, 10, 0.05, "a time-triggered flush")
    writer.close()
    stalled = PredictionLog(root, max_queue=2)  # never started: nothing drains the queue
    started = time.perf_counter()
    for _ in range(5):
        stalled.submit(_served(4, time.time()))
    assert time.perf_counter() - started < 0.5
    assert stalled.dropped_rows == 3 * 4


def _stop_with_id(trained, i: int) -> dict:
    stop = trained.stops(1, start=i)[0]
    return {**stop, "delivery_id": f"DLV-{i}"}


def test_delivery_id_is_echoed_and_logged_with_the_model_version(serve_app, trained, tmp_path):
    root = tmp_path / "predictions"
    server = serve_app(ServerSettings(model_path=str(trained.bundle), prediction_log_uri=str(root),
                                      prediction_log_flush_s=0.3))
    wait_ready(server.url)
    stops = [_stop_with_id(trained, i) for i in range(3)] + trained.stops(1, start=10)  # the last without an id
    r = httpx.post(f"{server.url}/predict", json={"stops": stops}, timeout=10)
    assert r.status_code == 200, r.text
    body = r.json()
    assert [p.get("delivery_id") for p in body["predictions"]] == ["DLV-0", "DLV-1", "DLV-2", None]
    wait_for(lambda: len(read_log(str(root))) == 4, 10, 0.1, "the logged predictions")
    frame = read_log(str(root))
    logged = frame[frame["delivery_id"].notna()].set_index("delivery_id").loc[["DLV-0", "DLV-1", "DLV-2"]]
    assert (logged["model_version"] == body["model_version"]).all()
    assert np.allclose(logged["service_time_s"], [p["service_time_s"] for p in body["predictions"][:3]], atol=1e-3)
    assert (logged["source"] == "model").all() and (logged["low_s"] <= logged["high_s"]).all()
    # The held-out customers are mostly known to the snapshot; the flag is the snapshot's own answer.
    known = set(server.state.holder.current.predictor.history["customer_key"].astype(str))
    assert logged["history_found"].tolist() == [s["customer_key"] in known for s in stops[:3]]
    metrics = httpx.get(f"{server.url}/metrics").text
    assert "servicetime_prediction_log_rows_total 4.0" in metrics


def test_clean_shutdown_writes_what_is_queued(trained, tmp_path):
    from components.serving.app import create_app
    from tests.serving.conftest import ThreadServer

    root = tmp_path / "predictions"
    settings = ServerSettings(model_path=str(trained.bundle), prediction_log_uri=str(root),
                              prediction_log_flush_s=600, prediction_log_flush_rows=1_000_000)
    with ThreadServer(create_app(settings)) as server:
        wait_ready(server.url)
        for i in range(5):
            assert httpx.post(f"{server.url}/predict", json={"stops": [_stop_with_id(trained, i)]}).status_code == 200
        assert read_log(str(root)).empty  # nothing flushed yet: neither size nor time reached
    assert sorted(read_log(str(root))["delivery_id"]) == [f"DLV-{i}" for i in range(5)]


def test_predict_requires_the_bearer_token_when_one_is_set(serve_app, trained, monkeypatch):
    monkeypatch.setenv("SERVICETIME_API_TOKEN", "s3cret-token")
    server = serve_app(ServerSettings(model_path=str(trained.bundle)))
    wait_ready(server.url)  # /readyz is open
    body = {"stops": trained.stops(1)}
    denied = httpx.post(f"{server.url}/predict", json=body)
    assert denied.status_code == 401 and "bearer token" in denied.json()["detail"]
    assert denied.headers["www-authenticate"].startswith("Bearer")
    wrong = httpx.post(f"{server.url}/predict", json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    ok = httpx.post(f"{server.url}/predict", json=body, headers={"Authorization": "Bearer s3cret-token"})
    assert ok.status_code == 200 and len(ok.json()["predictions"]) == 1
    for path in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(f"{server.url}{path}").status_code == 200, path


@pytest.mark.parametrize("token", [None, ""])
def test_no_token_means_open(serve_app, trained, monkeypatch, token):
    if token is None:
        monkeypatch.delenv("SERVICETIME_API_TOKEN", raising=False)
    else:
        monkeypatch.setenv("SERVICETIME_API_TOKEN", token)
    server = serve_app(ServerSettings(model_path=str(trained.bundle)))
    wait_ready(server.url)
    assert httpx.post(f"{server.url}/predict", json={"stops": trained.stops(1)}).status_code == 200
