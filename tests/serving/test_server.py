"""The model server for real: uvicorn on loopback, a trained bundle, HTTP in and out."""

from __future__ import annotations

import json
from types import SimpleNamespace

import httpx
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from components.learn.bundle import Predictor
from components.serving import metric_names as m
from components.serving.api import FIELD_NAMES
from components.serving.settings import ServerSettings
from tests.serving.conftest import metric_value, wait_for, wait_ready

pytestmark = pytest.mark.slow

MAX_BATCH = 50


@pytest.fixture(scope="module")
def module_server(trained):
    """One server for the read-mostly tests of this module."""
    from components.serving.app import create_app
    from tests.serving.conftest import ThreadServer

    settings = ServerSettings(model_path=str(trained.bundle), max_batch=MAX_BATCH, drift_window=200)
    with ThreadServer(create_app(settings)) as server:
        wait_ready(server.url)
        yield server


@pytest.fixture
def client(module_server):
    with httpx.Client(base_url=module_server.url, timeout=10) as c:
        yield c


def test_health_ready_and_docs(client):
    assert client.get("/healthz").json() == {"status": "alive"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["version"]
    spec = client.get("/openapi.json").json()
    stop = spec["components"]["schemas"]["Stop"]
    assert set(stop["properties"]) == set(FIELD_NAMES) | {"delivery_id"}  # the id is echoed and logged, not a feature
    assert spec["components"]["schemas"]["PredictRequest"]["properties"]["stops"]["maxItems"] == MAX_BATCH


def test_single_and_batch_predictions_match_the_bundle(client, trained):
    predictor = Predictor.load(trained.bundle)
    one = client.post("/predict", json={"stops": trained.stops(1)})
    assert one.status_code == 200, one.text
    body = one.json()
    assert body["model_version"] == predictor.version
    assert body["predictions"][0]["source"] == "model"
    batch = client.post("/predict", json={"stops": trained.stops(MAX_BATCH, start=5)})
    assert batch.status_code == 200
    got = np.array([p["service_time_s"] for p in batch.json()["predictions"]])
    want, low, high = predictor.predict_interval(trained.test[list(FIELD_NAMES)].iloc[5 : 5 + MAX_BATCH])
    np.testing.assert_allclose(got, want, atol=1e-3)
    assert {p["source"] for p in batch.json()["predictions"]} == {"model"}
    np.testing.assert_allclose([p["low_s"] for p in batch.json()["predictions"]], low, atol=0.1)  # to 0.1 s
    np.testing.assert_allclose([p["high_s"] for p in batch.json()["predictions"]], high, atol=0.1)
    assert all(
        p["low_s"] <= p["service_time_s"] <= p["high_s"] for p in batch.json()["predictions"] + body["predictions"]
    )
    assert (high - low).min() > 0  # calibrated on the validation weeks, not a zero-width placeholder


def _malformed(trained) -> dict[str, tuple[bytes | dict, tuple[int, ...], str]]:
    stop = trained.stops(1)[0]
    missing = {k: v for k, v in stop.items() if k != "n_boxes"}
    return {
        "missing field": ({"stops": [missing]}, (422,), "n_boxes"),
        "wrong type": ({"stops": [{**stop, "weight_kg": "heavy"}]}, (422,), "weight_kg"),
        "negative boxes": ({"stops": [{**stop, "n_boxes": -3}]}, (422,), "n_boxes"),
        "empty batch": ({"stops": []}, (422,), "stops"),
        "oversized batch": ({"stops": [stop] * (MAX_BATCH + 1)}, (413, 422), "at most"),
        "non-JSON body": (b"stops=1&n_boxes=2", (400, 422), "JSON"),
        "history sent by the caller": ({"stops": [{**stop, "cust_prev_count": 4}]}, (422,), "cust_prev_count"),
        "unknown category": ({"stops": [{**stop, "building_type": "castle"}]}, (422,), "building_type"),
        "not an object": (b"[1, 2, 3]", (400, 422), "object"),
        "NaN": (json.dumps({"stops": [{**stop, "floor": float("nan")}]}).encode(), (400, 422), "floor"),
    }


@pytest.mark.parametrize("case", ["missing field", "wrong type", "negative boxes", "empty batch", "oversized batch",
                                  "non-JSON body", "history sent by the caller", "unknown category", "not an object",
                                  "NaN"])
def test_malformed_requests_get_4xx_with_a_message(client, trained, case):
    body, statuses, mentions = _malformed(trained)[case]
    r = client.post("/predict", content=body) if isinstance(body, bytes) else client.post("/predict", json=body)
    assert r.status_code in statuses, (r.status_code, r.text)
    detail = r.json()["detail"]
    assert mentions.lower() in (detail + json.dumps(r.json().get("errors", []))).lower(), detail


def test_huge_body_is_refused_before_parsing(client):
    r = client.post("/predict", content=b"x" * (ServerSettings(max_batch=MAX_BATCH).body_limit + 10))
    assert r.status_code == 413


def _json_values():
    scalars = (
        st.none() | st.booleans() | st.integers(-(10**20), 10**20) | st.floats(allow_nan=False) | st.text(max_size=12)
    )
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                             max_size=4), max_leaves=12)


def test_fuzzed_bodies_never_get_a_5xx(module_server, trained):
    """Property: whatever the body (random JSON, mutated stops, raw bytes), the answer is 2xx or 4xx."""
    stop = trained.stops(1)[0]
    fields = sorted(stop)

    mutated = st.builds(
        lambda drop, key, value, extra: {"stops": [
            {**{k: v for k, v in stop.items() if k != drop}, **({key: value} if key else {}), **extra}]},
        st.sampled_from([None, *fields]), st.sampled_from([None, *fields]), _json_values(),
        st.dictionaries(st.text(max_size=6), _json_values(), max_size=1))
    bodies = st.one_of(
        mutated.map(lambda b: json.dumps(b).encode()),
        _json_values().map(lambda v: json.dumps(v).encode()),
        st.dictionaries(st.just("stops"), st.lists(_json_values(), max_size=3)).map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=64),
        st.just(json.dumps({"stops": [{**stop, "floor": 1e308 * 10}]}, allow_nan=True).encode()),
    )
    seen = {"2xx": 0, "4xx": 0}

    with httpx.Client(base_url=module_server.url, timeout=10) as c:
        @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(bodies)
        def check(body):
            r = c.post("/predict", content=body, headers={"content-type": "application/json"})
            assert r.status_code < 500, (body[:300], r.status_code, r.text[:300])
            seen["2xx" if r.status_code < 300 else "4xx"] += 1
            if r.status_code >= 400:
                assert r.json()["detail"]

        check()
    assert seen["4xx"] > 0


def test_drift_gauge_moves_with_shifted_inputs(serve_app, trained):
    server = serve_app(ServerSettings(model_path=str(trained.bundle), max_batch=500, drift_window=400))
    wait_ready(server.url)

    def psi(feature: str) -> float:
        return metric_value(httpx.get(f"{server.url}/metrics").text, m.INPUT_DRIFT_PSI, feature=feature)

    stops = trained.stops(400)
    assert httpx.post(f"{server.url}/predict", json={"stops": stops}).status_code == 200
    calm = psi("n_items")
    assert calm is not None and calm < 0.2
    heavy = [
        {**s, "n_items": min(400, s["n_items"] * 4 + 50), "weight_kg": min(400.0, s["weight_kg"] * 4)} for s in stops
    ]
    assert httpx.post(f"{server.url}/predict", json={"stops": heavy}).status_code == 200
    shifted = psi("n_items")
    assert shifted > 1.0 > calm, (calm, shifted)
    assert psi("weight_kg") > 0.5
    rows = metric_value(httpx.get(f"{server.url}/metrics").text, m.DRIFT_WINDOW_ROWS)
    assert rows == 400


def test_fallback_when_the_model_cannot_load(serve_app, trained, tmp_path):
    server = serve_app(ServerSettings(model_path=str(tmp_path / "no-such-bundle"), reload_interval_s=30))
    wait_for(lambda: server.state.holder.last_error, 10, what="the load to fail")
    ready = httpx.get(f"{server.url}/readyz")
    assert ready.status_code == 503 and "no-such-bundle" in ready.json()["reason"]
    r = httpx.post(f"{server.url}/predict", json={"stops": trained.stops(3)})
    assert r.status_code == 200
    body = r.json()
    assert body["model_version"] is None
    assert [p["source"] for p in body["predictions"]] == ["fallback"] * 3
    from components.core.baseline import BusinessLogicModel

    want, low, high = BusinessLogicModel().predict_interval(trained.test.iloc[:3])
    np.testing.assert_allclose([p["service_time_s"] for p in body["predictions"]], want)
    np.testing.assert_allclose([p["low_s"] for p in body["predictions"]], low, atol=0.1)
    np.testing.assert_allclose([p["high_s"] for p in body["predictions"]], high, atol=0.1)
    text = httpx.get(f"{server.url}/metrics").text
    assert metric_value(text, f"{m.FALLBACKS}_total", reason="no_model") == 3
    assert metric_value(text, f"{m.PREDICTIONS}_total", source="fallback") == 3
    assert metric_value(text, m.MODEL_LOADED) == 0
    assert metric_value(text, f"{m.MODEL_RELOADS}_total", result="error") >= 1


class NonFinite:
    """A scorer whose network went wrong on two of three stops."""

    def predict_interval(self, cols):
        mean = np.array([np.nan, 321.0, np.inf])
        return mean, mean * 0.5, mean * 2


def test_scoring_errors_and_non_finite_outputs_fall_back(serve_app, trained):
    server = serve_app(ServerSettings(model_path=str(trained.bundle)))
    wait_ready(server.url)
    model = server.state.holder.current

    def broken(cols):
        raise RuntimeError("simulated failure inside the model")

    original = model.scorer
    try:
        model.scorer = broken
        r = httpx.post(f"{server.url}/predict", json={"stops": trained.stops(2)})
        assert r.status_code == 200 and {p["source"] for p in r.json()["predictions"]} == {"fallback"}
        model.scorer = NonFinite()
        r = httpx.post(f"{server.url}/predict", json={"stops": trained.stops(3)})
        assert [p["source"] for p in r.json()["predictions"]] == ["fallback", "model", "fallback"]
        assert r.json()["predictions"][1]["service_time_s"] == 321.0
        assert all(p["low_s"] <= p["service_time_s"] <= p["high_s"] for p in r.json()["predictions"])
    finally:
        model.scorer = original
    text = httpx.get(f"{server.url}/metrics").text
    assert metric_value(text, f"{m.FALLBACKS}_total", reason="model_error") == 2
    assert metric_value(text, f"{m.FALLBACKS}_total", reason="non_finite") == 2


def test_failing_bookkeeping_or_calibration_never_fails_an_answer(serve_app, trained):
    """Drift, metrics and the prediction log come after the answer: their failure is counted, not a 500;
    a calibrated fallback that fails answers with the plain rules."""
    server = serve_app(ServerSettings(model_path=str(trained.bundle)))
    wait_ready(server.url)
    state, model = server.state, server.state.holder.current

    def boom(*args, **kwargs):
        raise RuntimeError("simulated bookkeeping failure")

    original_add, original_scorer = state.drift.add, model.scorer
    calibration = model.predictor.rules_calibration
    assert calibration is not None
    logged = []
    try:
        state.drift.add = boom
        state.prediction_log = SimpleNamespace(submit=logged.append)  # the log still gets the rows
        r = httpx.post(f"{server.url}/predict", json={"stops": trained.stops(2)})
        assert r.status_code == 200 and {p["source"] for p in r.json()["predictions"]} == {"model"}
        assert len(logged) == 1 and len(logged[0].seconds) == 2
        state.prediction_log = SimpleNamespace(submit=boom)
        model.scorer = NonFinite()  # stops 0 and 2 need the fallback, whose calibration now fails too
        calibration.interval = boom  # an instance attribute shadows the method for this test
        r = httpx.post(f"{server.url}/predict", json={"stops": trained.stops(3)})
        assert r.status_code == 200, r.text
        assert [p["source"] for p in r.json()["predictions"]] == ["fallback", "model", "fallback"]
        assert all(p["low_s"] <= p["service_time_s"] <= p["high_s"] for p in r.json()["predictions"])
    finally:
        state.drift.add, model.scorer, state.prediction_log = original_add, original_scorer, None
        vars(calibration).pop("interval", None)
    text = httpx.get(f"{server.url}/metrics").text
    assert metric_value(text, f"{m.MONITORING_ERRORS}_total") == 3  # drift twice, the log once


def test_metrics_exposition(client, trained):
    sent = trained.stops(4)
    client.post("/predict", json={"stops": sent})
    client.post("/predict", json={"stops": []})
    text = client.get("/metrics").text
    assert metric_value(text, f"{m.REQUESTS}_total", endpoint="/predict", status="200") >= 1
    assert metric_value(text, f"{m.REQUESTS}_total", endpoint="/predict", status="422") >= 1
    assert metric_value(text, f"{m.REQUEST_LATENCY}_count", endpoint="/predict") >= 2
    assert metric_value(text, f"{m.INFERENCE_LATENCY}_count") >= 1
    assert metric_value(text, f"{m.PREDICTED_SERVICE_TIME}_count") >= 4
    assert metric_value(text, f"{m.BATCH_SIZE}_bucket", le="5.0") >= 1
    assert metric_value(text, m.MODEL_INFO, alias="none") == 1
    assert metric_value(text, m.MODEL_LOADED) == 1
    assert metric_value(text, m.MODEL_LOAD_SECONDS) > 0
    assert metric_value(text, m.MODEL_LOADED_TIMESTAMP) > 1.7e9
    # The data's age: from the newest training stop (the bundle's lineage) to the newest stop served.
    until = metric_value(text, m.MODEL_DATA_TIMESTAMP)
    newest = max(pd.Timestamp(s["delivered_at"]).timestamp() for s in sent)
    assert pd.Timestamp(until, unit="s") > pd.Timestamp("2024-01-01")
    assert newest - until <= metric_value(text, m.MODEL_DATA_AGE) < 60 * 86400
    client.get("/no/such/path")
    text = client.get("/metrics").text
    assert metric_value(text, f"{m.REQUESTS}_total", endpoint="other", status="404") >= 1  # bounded labels
