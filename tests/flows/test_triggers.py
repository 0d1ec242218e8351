"""Retraining triggers from online figures: each fires on its own cause and stays quiet otherwise."""

import numpy as np
import pandas as pd
import pytest

from components.core.schema import ID, LABEL
from components.flows.triggers import Evaluated, Online, online, retrain_triggers
from tests.conftest import tiny_config

EVALUATED = Evaluated(80.0)


def _online(mae=80.0, urban=-12.0, rural=3.0, unseen=0.0) -> Online:
    return Online(1000, mae, {"area_type=urban": urban, "area_type=rural": rural}, unseen)


STARTED = _online(urban=-10.0, rural=2.0)


@pytest.fixture
def cfg():
    return tiny_config("/tmp/unused", **{"retrain.every_weeks": 4, "retrain.drift_psi": 0.2,
                                         "retrain.error_growth": 0.1, "retrain.slice_bias_growth_s": 20.0,
                                         "retrain.unseen_area_share": 0.05})


def test_each_trigger_fires_on_its_own_cause(cfg):
    assert retrain_triggers(cfg, 1, 0.0, None, None) == ["no champion yet"]
    assert retrain_triggers(cfg, 1, 0.1, EVALUATED, _online(), STARTED) == []
    assert retrain_triggers(cfg, 4, 0.0, EVALUATED, _online(), STARTED)[0].startswith("schedule")
    assert retrain_triggers(cfg, 1, 0.5, EVALUATED, _online(), STARTED)[0].startswith("input drift")
    assert retrain_triggers(cfg, 1, 0.0, EVALUATED, _online(mae=95.0), STARTED)[0].startswith("error growth")
    urban = retrain_triggers(cfg, 1, 0.0, EVALUATED, _online(urban=-35.0), STARTED)
    assert urban == ["slice bias growth (area_type=urban: bias -35 s vs -10 s when it started serving)"]
    assert retrain_triggers(cfg, 1, 0.0, EVALUATED, _online(rural=-20.0), STARTED) == [
        "slice bias growth (area_type=rural: bias -20 s vs +2 s when it started serving)"]
    assert retrain_triggers(cfg, 1, 0.0, EVALUATED, _online(unseen=0.08), STARTED) == [
        "unseen areas (8.0% of stops in areas the model never saw)"]
    # All that hold are named, in order; before its first full window a slice is not judged.
    both = retrain_triggers(cfg, 5, 0.0, EVALUATED, _online(urban=-80.0, unseen=0.2), None)
    assert [t.split(" (")[0] for t in both] == ["schedule", "unseen areas"]


def _stops(n: int, area: np.ndarray, area_type: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({ID: [f"D{i}" for i in range(n)], "route_id": [f"R{i // 10}" for i in range(n)],
                         "stop_index": np.arange(n) % 10, "area_id": area, "area_type": area_type,
                         LABEL: np.full(n, 100.0), "batch": "b"})


def test_online_figures_come_from_the_served_rows_joined_with_labels(cfg):
    n = 400
    area_type = np.where(np.arange(n) < 200, "urban", "rural")
    labels = _stops(n, np.where(np.arange(n) < 40, "new", "old"), area_type)
    labels = pd.concat([labels, labels.iloc[:5]])  # a duplicated label row counts once
    pred = np.where(area_type == "urban", 70.0, 110.0)  # urban planned 30 s short, rural 10 s long
    served = pd.DataFrame({"delivery_id": labels[ID].iloc[:n].to_numpy(), "route_id": labels["route_id"].iloc[:n],
                           "stop_index": labels["stop_index"].iloc[:n], "model_version": "1",
                           "service_time_s": pred, "low_s": pred - 50, "high_s": pred + 50,
                           "history_found": True, "area_known": np.arange(n) >= 40,
                           "predicted_at": pd.Timestamp("2024-06-01", tz="UTC")})
    now = online(cfg, served, labels)
    assert now.rows == n and now.unseen_area_share == pytest.approx(0.1)
    assert now.slice_bias == {"area_type=rural": pytest.approx(10.0), "area_type=urban": pytest.approx(-30.0)}
    assert now.mae == pytest.approx(20.0)
