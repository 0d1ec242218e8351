import numpy as np
import pandas as pd

from components.learn.features import (
    FeatureTransform,
    HistoryLookup,
    add_point_in_time_history,
    history_snapshot,
    time_split,
)


def toy():
    ts = pd.to_datetime(
        ["2024-01-01 09:00", "2024-01-02 09:00", "2024-01-03 09:00", "2024-01-03 09:00", "2024-01-04 09:00"], utc=True
    )
    return pd.DataFrame({"delivery_id": list("abcde"), "customer_key": ["c1", "c1", "c1", "c2", "c1"],
                         "delivered_at": ts, "service_time_s": [100.0, 200.0, 400.0, 50.0, 800.0]})


def test_history_uses_only_strictly_earlier_stops():
    h = add_point_in_time_history(toy()).set_index("delivery_id")
    assert h.loc["a", "cust_prev_count"] == 0
    assert h.loc["b", "cust_prev_count"] == 1 and np.isclose(h.loc["b", "cust_prev_sum_log"], np.log(100))
    assert h.loc["e", "cust_prev_count"] == 3
    assert np.isclose(h.loc["e", "cust_prev_sum_log"], np.log([100, 200, 400]).sum())
    assert h.loc["d", "cust_prev_count"] == 0  # another customer's history never leaks in


def test_no_leakage_from_the_future(tiny_weeks):
    """Changing every label from some time on leaves all earlier features untouched."""
    data = pd.concat([w for _, w in tiny_weeks], ignore_index=True).drop_duplicates("delivery_id")
    data = data[data.service_time_s.notna()].reset_index(drop=True)
    cut = data["delivered_at"].quantile(0.6)
    future = data["delivered_at"] >= cut
    tampered = data.copy()
    tampered.loc[future, "service_time_s"] = 9999.0
    a, b = add_point_in_time_history(data), add_point_in_time_history(tampered)
    cols = ["cust_prev_count", "cust_prev_sum_log"]
    pd.testing.assert_frame_equal(a.loc[~future, cols], b.loc[~future, cols])
    # ...and the current stop's own label never feeds its own feature.
    first_visits = a.groupby("customer_key")["delivered_at"].transform("min") == a["delivered_at"]
    assert (a.loc[first_visits, "cust_prev_count"] == 0).all()


def test_transform_handles_unseen_categories_and_round_trips(tmp_path, tiny_weeks):
    data = pd.concat([w for _, w in tiny_weeks], ignore_index=True).dropna(subset=["service_time_s"])
    data = add_point_in_time_history(data)
    t = FeatureTransform().fit(data)
    unseen = data.head(5).assign(area_id="A999", building_type="igloo")
    cats, nums = t.transform(unseen)
    j_area, j_building = t.categorical.index("area_id"), t.categorical.index("building_type")
    assert (cats[:, j_area] == 0).all() and (cats[:, j_building] == 0).all()
    assert np.isfinite(nums).all()
    t.save(tmp_path / "t.json")
    again = FeatureTransform.load(tmp_path / "t.json")
    for a, b in zip(t.transform(data.head(50)), again.transform(data.head(50))):
        np.testing.assert_array_equal(a, b)


def test_serving_snapshot_matches_point_in_time_for_the_next_stop():
    frame = toy()
    snapshot = history_snapshot(frame.iloc[:4])
    nxt = HistoryLookup(snapshot).columns(frame.iloc[[4]]["customer_key"])
    pit = add_point_in_time_history(frame).iloc[4]
    assert nxt["cust_prev_count"][0] == pit["cust_prev_count"]
    assert np.isclose(nxt["cust_prev_sum_log"][0], pit["cust_prev_sum_log"])
    assert HistoryLookup(snapshot).columns(["never-seen"])["cust_prev_count"][0] == 0  # new customer


def test_time_split_never_mixes_weeks():
    frame = pd.DataFrame({"batch": [f"w{i:02d}" for i in range(10) for _ in range(3)], "x": range(30)})
    s = time_split(frame, val_weeks=2, test_weeks=3)
    assert s["train"]["batch"].max() < s["val"]["batch"].min() <= s["val"]["batch"].max() < s["test"]["batch"].min()
    assert sorted(s["test"]["batch"].unique()) == ["w07", "w08", "w09"]



def test_floor_bands_and_utc_time_categories_from_epoch_seconds_and_datetimes():
    from components.learn.features import floor_band

    floors = pd.Series([None, -1.0, 0.0, 0.5, 2.0, 2.5, 5.0, 5.5, 30.0])
    assert floor_band(floors).tolist() == ["unknown", "0", "0", "1-2", "1-2", "3-5", "3-5", "6+", "6+"]
    ts = pd.Series(pd.to_datetime(["2024-01-01 00:00:00", "2024-01-06 23:59:59", "2024-01-07 12:00:00"], utc=True))
    t = FeatureTransform(vocab={"weekday": [str(d) for d in range(7)], "hour": [str(h) for h in range(24)]},
                         categorical=("weekday", "hour"), numeric=())
    stops = {"delivered_at": ts, "floor": [np.nan] * 3, "has_elevator": [np.nan] * 3, "cust_prev_count": [0.0] * 3}
    as_frame, _ = t.transform(pd.DataFrame(stops))
    as_epoch, _ = t.transform({**stops, "delivered_at": np.array([1704067200.0, 1704585599.0, 1704628800.0])})
    # Monday 0h, Saturday 23h, Sunday 12h; vocabulary index = value + 1 (0 is "never seen").
    assert as_frame.tolist() == as_epoch.tolist() == [[1, 1], [6, 24], [7, 13]]
