"""The dynamic-data loop on tiny data: a bad week is rejected, retraining follows the schedule."""

import json

import pytest

from components.flows.loop import simulate
from components.learn import tracking
from tests.conftest import tiny_config

pytestmark = pytest.mark.slow


def test_loop_rejects_a_bad_week_and_retrains_on_schedule(tmp_path):
    cfg = tiny_config(tmp_path / "ws", **{"train.num_workers": 0, "retrain.every_weeks": 2})
    records = simulate(cfg, new_weeks=4, corrupt_weeks=(13,))
    assert [r.week for r in records] == [12, 13, 14, 15]
    bad = records[1]
    assert not bad.accepted and "minutes" in bad.rejected_because and bad.rows_quarantined == bad.rows_in
    assert records[0].retrain_reason == "no champion yet" and records[0].blessed
    assert records[3].retrain_reason.startswith("schedule")
    assert all(r.baseline_mae > r.champion_mae for r in records[2:])  # the champion beats the rules week after week
    tracking.setup(cfg)
    assert tracking.alias_version(cfg) is not None
    history = json.loads((tmp_path / "ws" / "simulate" / "history.json").read_text())
    assert len(history) == 4 and (tmp_path / "ws" / "simulate" / "history.png").exists()


def test_a_frozen_champion_triggers_on_the_urban_drift_and_the_new_areas(tmp_path):
    """Weeks 20-51 with the model trained on weeks 0-19 kept: the urban slice's bias grows
    (parking gets harder there every week) and areas opened in week 30 are ones it never saw."""
    cfg = tiny_config(tmp_path / "ws", **{"data.stops_per_week": 2000})
    records = simulate(cfg, new_weeks=32, start_week=20, frozen=True)
    assert [r.week for r in records] == list(range(20, 52))
    assert [r.week for r in records if r.retrain_reason] == [20]  # trained once, then kept
    slice_weeks = {r.week: t for r in records for t in r.triggers if t.startswith("slice bias growth")}
    unseen_weeks = [r.week for r in records if any(t.startswith("unseen areas") for t in r.triggers)]
    assert slice_weeks and all("area_type=urban" in t for t in slice_weeks.values()), slice_weeks
    assert min(slice_weeks) >= 40, slice_weeks  # growth takes months, not a noisy first week
    assert unseen_weeks and min(unseen_weeks) >= 30 and set(range(45, 52)) <= set(unseen_weeks), unseen_weeks
    history = json.loads((tmp_path / "ws" / "simulate" / "history.json").read_text())
    assert history[-1]["slice_bias"]["area_type=urban"] < history[5]["slice_bias"]["area_type=urban"] - 20
