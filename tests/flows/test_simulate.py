"""The dynamic-data loop on tiny data: a bad week is rejected, retraining follows the schedule."""

import json

import pytest

from components.flows.loop import retrain_reason, simulate
from components.learn import tracking
from tests.conftest import tiny_config

pytestmark = pytest.mark.slow


def test_retrain_reasons():
    cfg = tiny_config(
        "/tmp/unused", **{"retrain.every_weeks": 4, "retrain.drift_psi": 0.2, "retrain.error_growth": 0.1}
    )
    assert retrain_reason(cfg, 1, 0.0, None, None) == "no champion yet"
    assert retrain_reason(cfg, 4, 0.0, 80, 80).startswith("schedule")
    assert retrain_reason(cfg, 1, 0.5, 80, 80).startswith("input drift")
    assert retrain_reason(cfg, 1, 0.0, 95, 80).startswith("error growth")
    assert retrain_reason(cfg, 1, 0.1, 85, 80) is None


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
