"""The customer history as running state, week by week, equals the history over the whole year at once."""

import numpy as np
import pandas as pd
import pytest

from components.learn.features import FeatureTransform, add_point_in_time_history, build_features, history_snapshot
from components.learn.running_history import COUNT, SUM_LOG, RunningHistory


def whole_year(frame: pd.DataFrame) -> pd.DataFrame:
    """The reference: one sort and group-by over every stop (how the history was computed before)."""
    order = frame.sort_values(["delivered_at", "delivery_id"], kind="stable").index
    f = frame.loc[order]
    log_s = np.log(f["service_time_s"].astype(float).clip(lower=1.0))
    key = f["customer_key"]
    grp = log_s.groupby(key)
    ties = pd.DataFrame({"k": key, "t": f["delivered_at"], "s": log_s}).groupby(["k", "t"])
    out = frame.copy()
    out.loc[order, COUNT] = (grp.cumcount() - ties.cumcount()).to_numpy(float)
    out.loc[order, SUM_LOG] = (grp.cumsum() - ties["s"].cumsum()).to_numpy(float)
    return out


@pytest.fixture(scope="module")
def year(tiny_weeks) -> pd.DataFrame:
    frame = pd.concat([w.assign(batch=name) for name, w in tiny_weeks], ignore_index=True)
    return frame.sample(frac=1.0, random_state=3).reset_index(drop=True)  # row order must not matter


def test_week_by_week_equals_the_whole_year(year):
    streamed, reference = add_point_in_time_history(year), whole_year(year)
    assert list(streamed.index) == list(year.index)  # rows come back in their own order
    assert (streamed[COUNT].to_numpy() == reference[COUNT].to_numpy()).all()
    # The same sums, added in another order: equal up to float rounding.
    np.testing.assert_allclose(streamed[SUM_LOG], reference[SUM_LOG], rtol=1e-12, atol=1e-9)
    assert streamed[COUNT].max() > 3 and (streamed[COUNT] == 0).any()


def test_the_streamed_features_equal_the_whole_year_features(year, monkeypatch):
    import components.learn.features as features

    streamed = build_features(year, 2, 2)
    monkeypatch.setattr(features, "add_point_in_time_history", whole_year)
    reference = build_features(year, 2, 2)
    assert streamed[1].vocab == reference[1].vocab and streamed[1].floor_fill == reference[1].floor_fill
    np.testing.assert_allclose(streamed[1].mean, reference[1].mean, rtol=1e-9)
    for split in ("train", "val", "test"):
        a = FeatureTransform.transform(streamed[1], streamed[0][split])
        b = FeatureTransform.transform(reference[1], reference[0][split])
        assert (a[0] == b[0]).all()
        np.testing.assert_allclose(a[1], b[1], rtol=1e-5, atol=1e-6)


def test_the_state_is_the_snapshot_and_the_next_week_adds_to_it(year):
    weeks = sorted(year["batch"].unique())
    state = RunningHistory()
    state.add_all(year[year["batch"].isin(weeks[:-1])])
    last = state.add(year[year["batch"] == weeks[-1]])
    whole = whole_year(year)
    np.testing.assert_array_equal(last[COUNT], whole.loc[last.index, COUNT])
    mine = state.snapshot().set_index("customer_key").sort_index()
    theirs = history_snapshot(year).set_index("customer_key").sort_index()
    assert (mine["count"] == theirs["count"]).all()
    np.testing.assert_allclose(mine["sum_log"], theirs["sum_log"], rtol=1e-12)
    with pytest.raises(ValueError, match="does not follow the history"):
        state.add(year[year["batch"] == weeks[0]])  # an old week cannot be appended to a newer history


def test_weeks_that_overlap_in_time_are_taken_as_one(year):
    weeks = sorted(year["batch"].unique())
    late = year.copy()  # a file whose stops fall inside another week's
    late.loc[late["batch"] == weeks[3], "batch"] = weeks[5]
    late.loc[late.index[:40], "batch"] = weeks[7]
    streamed, reference = add_point_in_time_history(late), whole_year(late)
    assert (streamed[COUNT].to_numpy() == reference[COUNT].to_numpy()).all()
