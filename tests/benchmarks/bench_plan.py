"""Planning benchmark (not a test): do the promised arrival windows hold what they state, on later weeks?

    .venv/bin/python -m pytest tests/benchmarks/bench_plan.py -m bench -s -p no:cacheprovider

The default data (52 weeks) through the train step in-process, which fits the window
calibration on the validation weeks and saves it with the model; then the simulator's
next weeks (52-57, never seen) are planned with ``components.learn.planning.plan_file`` and
compared with their real arrivals. Side by side, the naive window that sums per-stop
interval half-widths along the route (what the conformal window replaces). Printed per
week and pooled: coverage, early and late shares, mean width. Goal (printed, not asserted):
coverage within 5 points of the stated level on every week.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.benchmarks.bench_data import default_features
from tests.benchmarks.results import goal, print_table, record

BLOCKS = (*((w, w) for w in range(52, 58)), (52, 57))  # each week alone (a plan is a week), then all six pooled


def naive_windows(plan: pd.DataFrame) -> pd.DataFrame:
    """Windows from summed per-stop half-widths of the earlier stops: the baseline."""
    half = ((plan["high_s"] - plan["low_s"]) / 2).to_numpy()
    first = plan.groupby("route_id").cumcount().to_numpy() == 0
    earlier = pd.Series(np.where(first, 0.0, np.r_[0.0, half[:-1]])).groupby(plan["route_id"].to_numpy()).cumsum()
    width = pd.to_timedelta(earlier.to_numpy(), unit="s")
    return plan.assign(window_start=plan["planned_arrival"] - width, window_end=plan["planned_arrival"] + width)


@pytest.mark.bench
def test_bench_plan(tmp_path):
    from components.learn.planning import plan_file, simulated_orders, window_coverage
    from components.steps.register import promote_step
    from components.steps.train import train_step

    feats = default_features()
    cfg = feats.cfg.model_copy(update={"workspace": str(tmp_path / "ws"),
                                       "train": feats.cfg.train.model_copy(update={"num_workers": 0})})
    trained = train_step(cfg, feats.dir, tmp_path / "model", "bench")
    promote_step(cfg, trained.model_version)
    rows = []
    for lo, hi in BLOCKS:
        orders = pd.concat([simulated_orders(cfg.data, w, keep_labels=True) for w in range(lo, hi + 1)])
        orders.to_parquet(tmp_path / "orders.parquet")
        s = plan_file(cfg, str(tmp_path / "orders.parquet"), str(tmp_path / "plan.parquet"))
        plan = pd.read_parquet(tmp_path / "plan.parquet")
        naive = window_coverage(naive_windows(plan), orders, s["level"])
        for name, c in (("conformal", s["window_coverage"]), ("summed intervals", naive)):
            rows.append({"weeks": f"{lo}-{hi}", "window": name, "coverage": round(c["coverage"], 3),
                         "early": round(c["early_share"], 3), "late": round(c["late_share"], 3),
                         "mean_width_min": round(c["mean_width_s"] / 60, 1)})
    print_table("plan", rows)
    record("plan", {"level": s["level"], "blocks": rows})
    conformal = [r for r in rows if r["window"] == "conformal"]
    worst = max(abs(r["coverage"] - s["level"]) for r in conformal[:-1])
    goal(f"plan coverage within 5 points of {s['level']:.0%} on every week", worst <= 0.05,
         f"worst week off by {worst * 100:.1f} points")
    pooled = abs(conformal[-1]["coverage"] - s["level"])
    goal(f"plan coverage within 5 points of {s['level']:.0%} over the six weeks", pooled <= 0.05,
         f"off by {pooled * 100:.1f} points")
