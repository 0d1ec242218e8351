"""The request model is derived from the schema; request columns score exactly as the same stops in a DataFrame."""

import datetime as dt

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from components.core.schema import COLUMNS, ID, PLANNING_COLUMNS
from components.learn.bundle import Predictor
from components.serving.api import FIELD_NAMES, Stop, columns_to_frame, request_model, to_columns
from components.serving.http import render_predictions, validation_error


def test_stop_fields_are_the_planning_columns():
    assert FIELD_NAMES == PLANNING_COLUMNS
    assert set(Stop.model_fields) == set(PLANNING_COLUMNS) | {
        ID
    }  # delivery_id: optional, echoed and logged, no feature
    assert "cust_prev_count" not in Stop.model_fields and "service_time_s" not in Stop.model_fields
    schema = Stop.model_json_schema()
    assert schema["additionalProperties"] is False
    for column in COLUMNS:
        if not column.planning:
            continue
        prop = schema["properties"][column.name]
        required = column.name in schema.get("required", [])
        assert required == (not column.nullable), column.name
        if column.categories:
            assert set(prop["enum"]) == set(column.categories)
        if column.min is not None and column.kind in ("int", "float"):
            text = str(prop)
            assert "minimum" in text, column.name


def _stop(**over):
    base = {"route_id": "R1", "stop_index": 0, "delivered_at": "2024-03-11T08:55:00Z", "customer_key": "c1",
            "area_id": "A001", "area_type": "urban", "building_type": "apartment", "floor": 3, "has_elevator": 0,
            "n_items": 20, "n_boxes": 3, "weight_kg": 12.5, "has_frozen": True, "driver_key": "d1",
            "driver_tenure_weeks": 10}
    return {**base, **over}


def test_request_bounds_and_types():
    model = request_model(3)
    ok = model.model_validate({"stops": [_stop(floor=None, has_elevator=None)]})
    assert ok.stops[0].floor is None
    naive = model.model_validate({"stops": [_stop(delivered_at="2024-03-11T08:55:00")]}).stops[0]
    assert naive.delivered_at.tzinfo is not None and naive.delivered_at.hour == 8  # naive means UTC
    oslo = model.model_validate({"stops": [_stop(delivered_at="2024-03-11T09:55:00+01:00")]}).stops[0]
    assert oslo.delivered_at == naive.delivered_at
    bad = [
        {"stops": []},
        {"stops": [_stop()] * 4},
        {"stops": [_stop(n_boxes=0)]},
        {"stops": [_stop(n_boxes=-2)]},
        {"stops": [_stop(weight_kg=float("nan"))]},
        {"stops": [_stop(area_type="moon")]},
        {"stops": [_stop(delivered_at="1066-10-14T09:00:00Z")]},
        {"stops": [_stop(cust_prev_count=3)]},
        {"stops": [_stop(customer_key="")]},
        {"stops": [_stop()], "extra": 1},
    ]
    for body in bad:
        with pytest.raises(ValidationError):
            model.model_validate(body)


def test_validation_errors_map_to_statuses():
    model = request_model(2)
    cases = {b'{"stops": [': 400, b'{"stops": []}': 422, b"[]": 422}
    cases[('{"stops": [%s]}' % ",".join(['{"a": 1}'] * 3)).encode()] = 413
    for body, status in cases.items():
        with pytest.raises(ValidationError) as info:
            model.model_validate_json(body)
        err = validation_error(info.value, 2)
        assert err.status == status, (body, err.detail)
        assert err.detail


def test_render_predictions_is_json():
    import json

    body = json.loads(render_predictions(np.array([301.23456, 420.0]), np.array([True, False]), "3",
                                         np.array([200.0, 301.0]), np.array([400.04449, 520.0])))
    assert body == {"predictions": [{"service_time_s": 301.235, "low_s": 200.0, "high_s": 400.1, "source": "model"},
                                    {"service_time_s": 420.0, "low_s": 301.0, "high_s": 520.0, "source": "fallback"}],
                    "model_version": "3"}
    one = json.loads(render_predictions(np.array([1.0]), np.array([False]), None, np.array([0.5]), np.array([2.0])))
    assert one["model_version"] is None
    # Rounding never puts the mean outside its interval.
    tight = json.loads(render_predictions(np.array([300.0004]), np.array([True]), "1", np.array([300.0004]),
                                          np.array([300.0004])))["predictions"][0]
    assert tight["low_s"] <= tight["service_time_s"] <= tight["high_s"]


def test_request_columns_score_as_the_held_out_frame(trained):
    """The server's columns (epoch seconds, float arrays, lists) and evaluation's DataFrame go through the
    one transform and the one forward pass: the same seconds and intervals."""
    predictor = Predictor.load(trained.bundle)
    stops = request_model(5000).model_validate({"stops": trained.stops(len(trained.test))}).stops
    cols = to_columns(stops)
    frame = trained.test[list(FIELD_NAMES)]
    for got, want in zip(predictor.predict_interval(cols), predictor.predict_interval(frame), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    one = {k: v[:1] for k, v in cols.items()}  # one stop: the request path's usual size
    np.testing.assert_allclose(predictor.predict(one), predictor.predict(frame.iloc[:1]), rtol=1e-6)


def _stops_strategy(known_customers: list[str], areas: list[str]):
    def opt(strategy):
        return st.one_of(st.none(), strategy)

    return st.fixed_dictionaries({
        "route_id": st.text(min_size=1, max_size=8),
        "stop_index": st.integers(0, 200),
        "delivered_at": st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2099, 12, 31),
                                     timezones=st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=-7))])),
        "customer_key": st.sampled_from(known_customers) | st.text(min_size=1, max_size=6),
        "area_id": st.sampled_from(areas) | st.text(min_size=1, max_size=5),
        "area_type": st.sampled_from(["urban", "suburban", "rural"]),
        "building_type": st.sampled_from(["house", "apartment", "office"]),
        "floor": opt(st.floats(0, 40)),
        "has_elevator": opt(st.sampled_from([0.0, 1.0, 0.5])),
        "n_items": st.integers(1, 400),
        "n_boxes": st.integers(1, 60),
        "weight_kg": st.floats(0.1, 400),
        "has_frozen": st.booleans(),
        "driver_key": st.text(min_size=1, max_size=6),
        "driver_tenure_weeks": st.integers(0, 1000),
    })


def test_request_columns_match_their_frame_on_random_stops(trained):
    """Property: for any valid batch (nulls, unseen areas and customers, any time zone), the request's
    columns and the same stops as a DataFrame give the same features and the same answer."""
    predictor = Predictor.load(trained.bundle)
    known = predictor.history["customer_key"].astype(str).tolist()[:20]
    areas = predictor.transform.vocab["area_id"]
    model = request_model(50)

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(_stops_strategy(known, areas), min_size=1, max_size=20))
    def check(stops):
        cols = to_columns(model.model_validate({"stops": stops}).stops)
        frame = columns_to_frame(cols)
        with_history = {**cols, **predictor.lookup.columns(cols["customer_key"])}
        frame_history = frame.assign(**predictor.lookup.columns(frame["customer_key"]))
        for got, want in zip(predictor.transform.transform(with_history), predictor.transform.transform(frame_history),
                             strict=True):
            np.testing.assert_array_equal(got, want)
        for got, want in zip(predictor.predict_interval(cols), predictor.predict_interval(frame), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-6)

    check()


def test_observe_many_equals_observe():
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from components.serving.metrics import SERVICE_TIME_BUCKETS, observe_many

    values = np.concatenate([np.random.default_rng(3).gamma(2.0, 200.0, 997), SERVICE_TIME_BUCKETS[:3], [1e6]])
    one, many = CollectorRegistry(), CollectorRegistry()
    h_one = Histogram("x", "x", buckets=SERVICE_TIME_BUCKETS, registry=one)
    h_many = Histogram("x", "x", buckets=SERVICE_TIME_BUCKETS, registry=many)
    for v in values:
        h_one.observe(float(v))
    observe_many(h_many, values)
    strip = lambda text: [line for line in text.decode().splitlines() if "_created" not in line and "_sum" not in line]  # noqa: E731
    assert strip(generate_latest(one)) == strip(generate_latest(many))
    assert h_many._sum.get() == pytest.approx(values.sum())


def test_drift_window_is_a_ring():
    from components.serving.metrics import DriftWindow

    window = DriftWindow(5, features=("a",))
    window.add({"a": np.array([1.0, 2.0, 3.0])})
    window.add({"a": np.array([4.0, 5.0, 6.0, 7.0])})
    assert window.filled == 5 and sorted(window.values[:, 0]) == [3.0, 4.0, 5.0, 6.0, 7.0]
    window.add({"a": np.arange(100.0, 112.0)})  # more than the window: the newest rows win
    assert sorted(window.values[:, 0]) == [107.0, 108.0, 109.0, 110.0, 111.0]
