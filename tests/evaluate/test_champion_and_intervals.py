"""The paired bootstrap over routes, split-conformal intervals, the mean correction and group gaps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from components.core.config import CalibrationConfig
from components.evaluate.champion import paired_bootstrap
from components.evaluate.fairness import group_metrics
from components.learn.calibration import (
    Calibration,
    conformal_bounds,
    coverage,
    fit_calibration,
)


def _routes(n_routes=200, stops=20):
    return np.repeat([f"R{i}" for i in range(n_routes)], stops)


def test_bootstrap_on_identical_models_straddles_zero():
    rng = np.random.default_rng(1)
    routes = _routes()
    err = rng.exponential(80, len(routes))
    t = paired_bootstrap(routes, err, err.copy(), samples=200, confidence=0.95)
    assert t["mae_regression"] == 0 and t["lower"] == pytest.approx(0) and t["upper"] == pytest.approx(0)
    assert t["routes"] == 200 and t["stops"] == 4000


def test_bootstrap_on_a_hand_made_pair():
    rng = np.random.default_rng(2)
    routes = _routes()
    champion = rng.exponential(80, len(routes))
    # The candidate is 5 % worse on every stop: the whole interval sits at +5 %.
    t = paired_bootstrap(routes, champion * 1.05, champion, samples=300, confidence=0.95)
    assert (
        t["mae_regression"] == pytest.approx(0.05)
        and t["lower"] == pytest.approx(0.05)
        and t["upper"] == pytest.approx(0.05)
    )
    # Equal on average, but better on half the routes and worse on the other half: the point
    # estimate is near zero, and the interval says how far noise alone could move it.
    sign = np.where(np.arange(len(routes)) // 20 % 2 == 0, 1.3, 0.7)
    t = paired_bootstrap(routes, champion * sign, champion, samples=400, confidence=0.95)
    assert abs(t["mae_regression"]) < 0.02
    assert t["lower"] < t["mae_regression"] < t["upper"] and t["upper"] - t["lower"] > 0.04


def test_conformal_bounds_cover_new_data_at_nominal():
    rng = np.random.default_rng(3)
    fit, check = rng.lognormal(0, 0.3, 4000), rng.lognormal(0, 0.3, 20000)
    low, high = conformal_bounds(fit, 0.8)
    inside = np.mean((check >= low) & (check <= high))
    assert abs(inside - 0.8) < 0.02 and low < 1 < high


def test_fit_calibration_removes_bias_per_segment_and_brackets_the_mean():
    rng = np.random.default_rng(4)
    n = 6000
    seg = np.where(np.arange(n) % 3 == 0, "urban", "rural")
    truth = rng.uniform(200, 500, n)
    y = truth * rng.lognormal(0.05, 0.25, n)
    raw = truth * np.where(seg == "urban", 0.85, 0.95)  # under-predicts, more in town
    cal = fit_calibration(raw, y, seg.tolist(), CalibrationConfig())
    mean = cal.mean(raw, seg.tolist())
    for s in ("urban", "rural"):
        assert abs((mean - y)[seg == s].mean()) < 1e-6
    low, high = cal.interval(mean, seg.tolist())
    assert (low <= mean).all() and (mean <= high).all()
    assert abs(coverage(y, low, high, 0.8)["coverage"] - 0.8) < 0.02
    again = Calibration.from_dict(cal.to_dict())
    np.testing.assert_allclose(again.mean(raw, seg.tolist()), mean)
    # An unseen segment gets the global figures.
    assert again.mean(np.array([100.0]), ["mountain"])[0] == pytest.approx(100 * cal.factor["*"])


def test_group_gaps():
    frame = pd.DataFrame(
        {
            "area_type": ["urban"] * 4 + ["rural"] * 4,
            "driver_tenure_weeks": [10, 10, 80, 80, 200, 200, 200, 200],
            "service_time_s": [300.0] * 8,
        }
    )
    pred = np.array([280.0, 280, 280, 280, 310, 310, 310, 310])
    delay = np.array([0, 1000, 0, 1000, 0, 0, -1000, 0])
    g = group_metrics(frame, pred, delay, window_s=900, min_rows=2)
    assert g["area_type"]["bias_gap_s"] == pytest.approx(30.0)
    assert (
        g["area_type"]["groups"]["urban"]["late_share"] == 0.5
        and g["area_type"]["groups"]["rural"]["early_share"] == 0.25
    )
    assert set(g["driver_tenure"]["groups"]) == {"under 1 year", "1-2 years", "2 years and more"}
    assert group_metrics(frame, pred, delay, window_s=900, min_rows=5)["area_type"]["bias_gap_s"] == 0.0
