"""The baselines a learned model must beat: simple, honest, fitted on the past only.

* ``baseline``: the business-logic rules (``components.core.baseline``).
* ``baseline_calibrated``: the rules with their per-segment bias (area type x
  building type) removed on the training weeks. Shifting a biased rule is not
  learning: a model that only does this must not ship.
* ``baseline_history``: the customer's own past median service time, falling
  back to the segment median for customers never seen.

Each has ``predict(frame) -> seconds``, like the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from components.core.baseline import BusinessLogicModel
from components.core.schema import LABEL

BASELINES = ("baseline", "baseline_calibrated", "baseline_history")
SEGMENT = ("area_type", "building_type")
MIN_SEGMENT_ROWS = 30  # smaller segments use the global figure


def segment_key(frame: pd.DataFrame) -> pd.Series:
    return frame[SEGMENT[0]].astype(str) + "/" + frame[SEGMENT[1]].astype(str)


def _per_segment(values: pd.Series, keys: pd.Series, how: str) -> tuple[dict[str, float], float]:
    grouped = values.groupby(keys.to_numpy())
    stat = getattr(grouped, how)()
    table = stat[grouped.size() >= MIN_SEGMENT_ROWS].to_dict()
    return {str(k): float(v) for k, v in table.items()}, float(getattr(values, how)())


@dataclass
class CalibratedRules:
    """The rules plus a per-segment shift: mean(measured - rules) on the training weeks."""

    shift: dict[str, float] = field(default_factory=dict)
    default: float = 0.0
    name: str = "rules, bias removed"

    @classmethod
    def fit(cls, train: pd.DataFrame) -> CalibratedRules:
        error = train[LABEL].astype(float) - BusinessLogicModel().predict(train)
        return cls(*_per_segment(error, segment_key(train), "mean"))

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        shift = segment_key(frame).map(self.shift).fillna(self.default).to_numpy(float)
        return BusinessLogicModel().predict(frame) + shift


@dataclass
class HistoryMedian:
    """The customer's past median service time; the segment median for a customer never seen."""

    customer: dict[str, float] = field(default_factory=dict)
    segment: dict[str, float] = field(default_factory=dict)
    default: float = 330.0
    name: str = "customer history"

    @classmethod
    def fit(cls, past: pd.DataFrame) -> HistoryMedian:
        y = past[LABEL].astype(float)
        customer = y.groupby(past["customer_key"].astype(str).to_numpy()).median()
        segment, default = _per_segment(y, segment_key(past), "median")
        return cls({str(k): float(v) for k, v in customer.items()}, segment, default)

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        fallback = segment_key(frame).map(self.segment).fillna(self.default)
        return frame["customer_key"].astype(str).map(self.customer).fillna(fallback).to_numpy(float)


def fit_baselines(train: pd.DataFrame, val: pd.DataFrame | None = None) -> dict[str, object]:
    """All three, fitted on the past: the rules' shift on the training weeks, customer history on
    every week before the test (what the model's history snapshot also holds)."""
    past = train if val is None else pd.concat([train, val], ignore_index=True)
    return {"baseline": BusinessLogicModel(), "baseline_calibrated": CalibratedRules.fit(train),
            "baseline_history": HistoryMedian.fit(past)}


def strongest(metrics: dict[str, dict | None]) -> str:
    """The baseline with the lowest MAE: the one a model must beat."""
    present = [k for k in BASELINES if metrics.get(k)]
    return min(present, key=lambda k: metrics[k]["mae"])
