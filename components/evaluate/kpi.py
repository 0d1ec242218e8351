"""The route replay KPI: what a route plan built on a model's service times means for customers.

A route is planned by adding up drive times and predicted service times. The
driver then meets the real service times, so the arrival at stop ``k`` is late
(positive) or early (negative) by the sum of the service-time errors of the
stops before it. Per-stop errors partly cancel along a route, which is why a
model can improve per-stop MAE a lot and route precision less (Oda's finding).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from components.core.schema import LABEL


def arrival_delays(frame: pd.DataFrame, predicted_s: np.ndarray) -> pd.Series:
    """Arrival delay in seconds at every stop (index aligned with ``frame``)."""
    f = pd.DataFrame({
        "route_id": frame["route_id"].to_numpy(),
        "stop_index": frame["stop_index"].to_numpy(),
        "error": frame[LABEL].to_numpy(float) - np.asarray(predicted_s, dtype=float),
    }, index=frame.index)
    f = f.sort_values(["route_id", "stop_index"], kind="stable")
    # Delay at a stop = errors of all earlier stops on the route (this stop's own error comes after arrival).
    cumulative = f.groupby("route_id")["error"].cumsum() - f["error"]
    return cumulative.reindex(frame.index)


def route_kpi(frame: pd.DataFrame, predicted_s: np.ndarray, window_s: float) -> dict[str, float]:
    """Arrival delay statistics. Late (after the promised window) and early (before it) are
    reported apart: a customer waiting past the window is not the same miss as a van idling early."""
    delay = arrival_delays(frame, predicted_s).to_numpy()
    return {
        "delay_std_s": float(np.std(delay)),
        "delay_mean_s": float(np.mean(delay)),
        "delay_mae_s": float(np.mean(np.abs(delay))),
        "delay_p90_abs_s": float(np.quantile(np.abs(delay), 0.9)),
        "outside_window_share": float(np.mean(np.abs(delay) > window_s)),
        "late_share": float(np.mean(delay > window_s)),
        "early_share": float(np.mean(delay < -window_s)),
        "routes": int(frame["route_id"].nunique()),
        "stops": len(frame),
    }
