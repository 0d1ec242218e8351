"""A plan for people: one route as a picture, the plan's summary as Markdown."""

from __future__ import annotations

import numpy as np
import pandas as pd

from components.core.schema import ID, TIMESTAMP


def plot_route(plan: pd.DataFrame, route_id: str, actual: pd.DataFrame | None = None):
    """One route's plan as a picture: each stop's promised window as a bar, the planned arrival as a dot,
    and (with ``actual``, a frame with ``delivery_id`` and real ``delivered_at``) where the van really came.
    Returns a matplotlib Figure (not pyplot, so a notebook's backend is left alone)."""
    from matplotlib.figure import Figure

    r = plan[plan["route_id"] == route_id].sort_values("stop_index")
    if r.empty:
        raise ValueError(f"no route {route_id!r} in the plan")
    t0 = r["window_start"].min()
    minutes = lambda col: (r[col] - t0).dt.total_seconds().to_numpy() / 60  # noqa: E731
    lo, hi, planned = minutes("window_start"), minutes("window_end"), minutes("planned_arrival")
    fig = Figure(figsize=(8, 0.28 * len(r) + 1.4))
    ax = fig.subplots()
    y = np.arange(len(r))
    ax.barh(y, hi - lo, left=lo, height=0.6, color="#9ecae1", label="promised window")
    ax.plot(planned, y, "o", color="#08519c", ms=4, label="planned arrival")
    if actual is not None:
        arrived = pd.to_datetime(r[ID].map(actual.drop_duplicates(ID).set_index(ID)[TIMESTAMP]), utc=True)
        real = (arrived - t0).dt.total_seconds().to_numpy() / 60
        inside = (arrived >= r["window_start"]) & (arrived <= r["window_end"])
        ax.plot(real[inside.to_numpy()], y[inside.to_numpy()], "x", color="#238b45", label="arrived, in window")
        ax.plot(real[~inside.to_numpy()], y[~inside.to_numpy()], "x", color="#cb181d", label="arrived, outside")
    ax.set_yticks(y, [f"stop {int(i)}" for i in r["stop_index"]], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"minutes after {t0:%a %H:%M} UTC")
    ax.set_title(f"route {route_id}: {len(r)} stops, windows at the stated level")
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    return fig


def render_plan_summary(summary: dict) -> str:
    """The plan's summary as Markdown (the KFP dashboard shows it beside the plan)."""
    lines = ["# Plan", "",
             f"- {summary['stops']:,} stops on {summary['routes']:,} routes, model v{summary['model_version']}",
             f"- plan: `{summary['out']}`",
             f"- arrival windows at {summary['level']:.0%}; calibration: {summary['window_calibration']}"]
    c = summary.get("window_coverage")
    if c:
        lines.append(f"- on these stops' real arrivals (after each route's start): coverage **{c['coverage']:.1%}** "
                     f"(stated {c['level']:.0%}), early {c['early_share']:.1%}, late {c['late_share']:.1%}, "
                     f"mean width {c['mean_width_s'] / 60:.0f} min")
    return "\n".join(lines) + "\n"
