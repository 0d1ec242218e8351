"""Fairness as data: error, bias and late share per group of customers and drivers.

An overall bias near zero can hide urban routes planned too short and rural ones
too long; a model can serve new drivers worse than experienced ones. The gap
between the best- and worst-served group is what the gate watches. A group of
only a few drivers' routes is shown but not judged (``min_group_rows``): its
bias is those routes' shocks and those drivers' habits, not the model's.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from components.core.schema import LABEL

TENURE_BANDS = ((0, 52, "under 1 year"), (52, 104, "1-2 years"), (104, None, "2 years and more"))


def tenure_band(frame: pd.DataFrame) -> pd.Series:
    weeks = pd.to_numeric(frame["driver_tenure_weeks"], errors="coerce").to_numpy(float)
    labels = np.full(len(frame), "unknown", dtype=object)
    for lo, hi, label in TENURE_BANDS:
        labels[(weeks >= lo) & ((weeks < hi) if hi is not None else True)] = label
    return pd.Series(labels, index=frame.index)


GROUPINGS: dict[str, Callable[[pd.DataFrame], pd.Series]] = {
    "area_type": lambda f: f["area_type"].astype(str),
    "driver_tenure": tenure_band,
}


def _gap(groups: list[dict], metric: str) -> float:
    values = [g[metric] for g in groups]
    return float(max(values) - min(values)) if len(values) > 1 else 0.0


def group_metrics(frame: pd.DataFrame, pred: np.ndarray, delay: np.ndarray, window_s: float,
                  min_rows: int) -> dict[str, dict]:
    """Per grouping: every group's figures and the gaps between the groups with enough rows."""
    err = np.asarray(pred, float) - frame[LABEL].to_numpy(float)
    delay = np.asarray(delay, float)
    out: dict[str, dict] = {}
    for grouping, key_of in GROUPINGS.items():
        keys = key_of(frame).to_numpy()
        groups = {}
        for g in sorted(set(keys.tolist())):
            m = keys == g
            groups[str(g)] = {
                "rows": int(m.sum()),
                "bias_s": float(err[m].mean()),
                "mae_s": float(np.abs(err[m]).mean()),
                "late_share": float(np.mean(delay[m] > window_s)),
                "early_share": float(np.mean(delay[m] < -window_s)),
            }
        for v in groups.values():
            v["judged"] = v["rows"] >= min_rows
        judged = [v for v in groups.values() if v["judged"]]

        out[grouping] = {"bias_gap_s": _gap(judged, "bias_s"), "late_share_gap": _gap(judged, "late_share"),
                         "mae_gap_s": _gap(judged, "mae_s"), "groups": groups}
    return out


def largest_bias_gap(fairness: dict[str, dict]) -> tuple[str, float]:
    grouping = max(fairness, key=lambda g: fairness[g]["bias_gap_s"])
    return grouping, fairness[grouping]["bias_gap_s"]
