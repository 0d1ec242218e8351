"""The gate against trivial models: shifting or scaling the rules, or a segment median, is not learning."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from components.core.baseline import BusinessLogicModel
from components.core.schema import LABEL
from components.evaluate.baselines import (
    CalibratedRules,
    HistoryMedian,
    fit_baselines,
    segment_key,
    strongest,
)
from components.evaluate.evaluation import evaluate


class Shifted:
    """The rules minus their mean over-plan on the training weeks."""

    def __init__(self, train: pd.DataFrame):
        self.shift = float(np.mean(train[LABEL] - BusinessLogicModel().predict(train)))

    def predict(self, frame):
        return BusinessLogicModel().predict(frame) + self.shift


class Scaled:
    """The rules times the ratio of measured to planned time on the training weeks."""

    def __init__(self, train: pd.DataFrame):
        self.ratio = float(train[LABEL].sum() / BusinessLogicModel().predict(train).sum())

    def predict(self, frame):
        return BusinessLogicModel().predict(frame) * self.ratio


class SegmentMedian:
    """The median by area type and building type."""

    def __init__(self, train: pd.DataFrame):
        self.table = train[LABEL].groupby(segment_key(train).to_numpy()).median()

    def predict(self, frame):
        return segment_key(frame).map(self.table).fillna(self.table.median()).to_numpy(float)


@pytest.mark.parametrize("trivial", [Shifted, Scaled, SegmentMedian])
def test_trivial_models_are_not_blessed(tiny_split, trivial):
    s = tiny_split
    ev = evaluate(s.test, trivial(s.train), fit_baselines(s.train, s.val), None, set(s.train.area_id),
                  s.cfg.eval.model_copy(update={"importance_rows": 200, "importance_repeats": 1}))
    assert not ev.verdict["blessed"]
    check = next(c for c in ev.verdict["checks"] if c["check"] == "beats the strongest baseline")
    assert not check["passed"], check["detail"]


def test_trivial_models_do_pass_against_the_rules_alone(tiny_split):
    """Why the strongest baseline matters: against the rules alone a shift looks like a 10 %+ gain."""
    s = tiny_split
    ev = evaluate(s.test, Shifted(s.train), BusinessLogicModel(), None, set(s.train.area_id),
                  s.cfg.eval.model_copy(update={"importance_rows": 200, "importance_repeats": 1}))
    check = next(c for c in ev.verdict["checks"] if c["check"] == "beats the strongest baseline")
    assert check["passed"], check["detail"]


def test_calibrated_rules_remove_the_training_weeks_bias(tiny_split):
    s = tiny_split
    cal = CalibratedRules.fit(s.train)
    err = cal.predict(s.train) - s.train[LABEL].to_numpy(float)
    assert abs(err.mean()) < 0.5  # exactly zero per segment; small segments share the global shift
    assert abs(BusinessLogicModel().predict(s.train).mean() - s.train[LABEL].mean()) > 20  # the rules over-plan


def test_history_median_uses_the_customer_then_the_segment():
    past = pd.DataFrame({"customer_key": ["a", "a", "a", "b"] + ["c"] * 40, "area_type": ["urban"] * 44,
                         "building_type": ["house"] * 44, LABEL: [100.0, 200.0, 900.0, 50.0] + [400.0] * 40})
    model = HistoryMedian.fit(past)
    frame = pd.DataFrame(
        {"customer_key": ["a", "b", "new"], "area_type": ["urban"] * 3, "building_type": ["house"] * 3}
    )
    assert model.predict(frame).tolist() == [200.0, 50.0, 400.0]


def test_strongest_is_the_lowest_mae():
    metrics = {"baseline": {"mae": 140}, "baseline_calibrated": {"mae": 100}, "baseline_history": {"mae": 110},
               "candidate": {"mae": 10}}
    assert strongest(metrics) == "baseline_calibrated"
