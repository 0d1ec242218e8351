import numpy as np
import pandas as pd
import pytest

from components.core.baseline import BusinessLogicModel
from components.evaluate.kpi import arrival_delays, route_kpi


def test_route_kpi_on_a_hand_computed_route():
    # One route, 4 stops; actual vs predicted errors: +60, -30, +120, 0 seconds.
    route = pd.DataFrame({"route_id": ["r"] * 4, "stop_index": [0, 1, 2, 3],
                          "service_time_s": [360.0, 270.0, 420.0, 300.0]})
    pred = np.array([300.0, 300.0, 300.0, 300.0])
    delays = arrival_delays(route, pred).tolist()
    assert delays == [0.0, 60.0, 30.0, 150.0]  # arrival at k = sum of errors of stops before k
    kpi = route_kpi(route, pred, window_s=100)
    assert kpi["delay_std_s"] == pytest.approx(np.std([0, 60, 30, 150]))
    assert kpi["outside_window_share"] == 0.25
    assert kpi["delay_mae_s"] == pytest.approx(60.0)
    assert kpi["late_share"] == 0.25 and kpi["early_share"] == 0.0 and kpi["delay_mean_s"] == pytest.approx(60.0)


def test_late_and_early_are_apart():
    route = pd.DataFrame(
        {"route_id": ["r"] * 4, "stop_index": [0, 1, 2, 3], "service_time_s": [100.0, 100.0, 100.0, 100.0]}
    )
    kpi = route_kpi(route, np.array([300.0, 300.0, 300.0, 300.0]), window_s=300)  # the plan is 200 s too long a stop
    assert kpi["early_share"] == 0.5 and kpi["late_share"] == 0.0  # delays 0, -200, -400, -600
    assert kpi["outside_window_share"] == kpi["early_share"] + kpi["late_share"]


def test_route_order_follows_stop_index_not_row_order():
    route = pd.DataFrame({"route_id": ["r", "r", "s"], "stop_index": [1, 0, 0], "service_time_s": [100.0, 200.0, 50.0]})
    delays = arrival_delays(route, np.array([100.0, 100.0, 100.0]))
    assert delays.tolist() == [100.0, 0.0, 0.0]


def test_business_rules():
    stops = pd.DataFrame(
        {
            "n_boxes": [2, 6, 3, 3],
            "floor": [0, 4, 4, np.nan],
            "has_elevator": [0, 0, 1, np.nan],
            "building_type": ["house", "apartment", "apartment", "apartment"],
            "area_type": ["suburban", "urban", "rural", "suburban"],
        }
    )
    assert BusinessLogicModel().predict(stops).tolist() == [420.0, 420 + 40 + 90 + 45, 420 - 30, 420.0]
