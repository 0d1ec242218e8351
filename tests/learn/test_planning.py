"""Window arithmetic of the route plan on a hand-made route."""

import numpy as np
import pandas as pd

from components.learn import planning as P
from components.learn.plan_view import plot_route


def test_planned_offsets_add_earlier_service_and_drives_per_route():
    route = np.array(["a", "a", "a", "b", "b"])
    service = np.array([100.0, 200.0, 300.0, 50.0, 60.0])
    drive = np.array([999.0, 10.0, 20.0, 999.0, 30.0])  # the first stop's drive is ignored
    var = np.array([4.0, 9.0, 16.0, 1.0, 1.0])
    offset, position, scale = P.planned_offsets(route, service, drive, var)
    assert offset.tolist() == [0.0, 110.0, 330.0, 0.0, 80.0]
    assert position.tolist() == [0, 1, 2, 0, 1]
    expected = np.sqrt([0.0, 4.0 + P.DRIVE_SD_S**2, 13.0 + 2 * P.DRIVE_SD_S**2, 0.0, 1.0 + P.DRIVE_SD_S**2])
    np.testing.assert_allclose(scale, expected)


def test_drive_column_wins_over_the_area_default():
    f = pd.DataFrame({"area_type": ["urban", "rural", "new"], "drive_s": [100.0, np.nan, np.nan]})
    assert P.drive_seconds(f).tolist() == [100.0, P.DEFAULT_DRIVE_S["rural"], P.FALLBACK_DRIVE_S]
    assert P.drive_seconds(f.drop(columns="drive_s"))[0] == P.DEFAULT_DRIVE_S["urban"]


def test_quantiles_by_position_bin():
    w = P.WindowCalibration(level=0.8, bins=[1, 5], q_low=[-1.0, -2.0], q_high=[1.5, 3.0])
    lo, hi = w.quantiles(np.array([0, 1, 4, 5, 30]))
    assert lo.tolist() == [-1.0, -1.0, -1.0, -2.0, -2.0]
    assert hi.tolist() == [1.5, 1.5, 1.5, 3.0, 3.0]
    assert P.WindowCalibration.from_dict(w.to_dict()) == w


def test_plot_route_draws_each_stop_and_marks_arrivals_outside_the_window():
    t0 = pd.Timestamp("2024-01-01 09:00", tz="UTC")
    minutes = lambda m: t0 + pd.to_timedelta(m, unit="min")  # noqa: E731
    plan = pd.DataFrame({"delivery_id": ["a", "b", "c"], "route_id": "r", "stop_index": [0, 1, 2],
                         "planned_arrival": minutes([0, 10, 20]), "window_start": minutes([0, 5, 12]),
                         "window_end": minutes([0, 15, 30])})
    actual = pd.DataFrame({"delivery_id": ["a", "b", "c"], "delivered_at": minutes([0, 11, 45])})
    fig = plot_route(plan, "r", actual)
    ax = fig.axes[0]
    assert len(ax.patches) == 3  # a window bar per stop
    lines = {line.get_label(): line for line in ax.lines}
    assert list(lines["arrived, outside"].get_xdata()) == [45.0]  # only stop 2 came outside its window
    assert list(lines["arrived, in window"].get_xdata()) == [0.0, 11.0]


def test_drives_are_read_off_labelled_routes_despite_a_faulty_label():
    """Gap between arrivals minus the earlier stop's service, per area type; a geofence fault does not move it."""
    rng = np.random.default_rng(0)
    rows = []
    for r, (area, drive) in enumerate([("rural", 600.0), ("urban", 240.0)] * 20):
        t = pd.Timestamp("2024-01-01 08:00", tz="UTC")
        for k in range(6):
            service = float(rng.uniform(60, 300))
            label = 7000.0 if (r, k) == (0, 2) else service  # a stuck geofence on one stop
            rows.append({"delivery_id": f"{r}-{k}", "route_id": f"r{r:02d}", "stop_index": k, "area_type": area,
                         "delivered_at": t, "service_time_s": label})
            t += pd.to_timedelta(service + drive + rng.normal(0, 20), unit="s")
    drives, sd = P.learned_drives(pd.DataFrame(rows), min_gaps=30)
    assert abs(drives["rural"] - 600) < 15 and abs(drives["urban"] - 240) < 15
    assert drives["suburban"] == P.DEFAULT_DRIVE_S["suburban"]  # no suburban route: the default stays
    assert 5 < sd < 40
    assert P.drive_seconds(pd.DataFrame({"area_type": ["rural", "unknown"]}), drives).tolist() == [
        drives["rural"], float(np.median(list(drives.values())))]
