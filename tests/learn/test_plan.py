"""Planning next week on tiny data: `servicetime plan` and the `servicetime-plan` pipeline on the KFP local runner."""

import json

import numpy as np
import pandas as pd
import pytest

from components.cli.main import main
from components.core.schema import LABEL
from components.learn.planning import PLAN_COLUMNS, load_window_calibration

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def champion(tmp_path_factory):
    """Tiny data, one model trained (with its window calibration) and made champion."""
    from components.steps.featurize import featurize
    from components.steps.ingest import generate_raw, ingest
    from components.steps.register import promote_step
    from components.steps.train import train_step
    from components.steps.validate import validate_dataset
    from tests.conftest import tiny_config

    ws = tmp_path_factory.mktemp("plan")
    cfg = tiny_config(ws / "ws", **{"train.num_workers": 0})
    root = str(ws / "ws" / "data")
    generate_raw(cfg.data, root)
    version = ingest(root, ws / "ingest").data_version
    validated = validate_dataset(cfg, root, version, ws / "validate")
    featurize(cfg, ws / "validate" / "clean.parquet", ws / "features")
    trained = train_step(cfg, ws / "features", ws / "model", validated.clean_version)
    promote_step(cfg, trained.model_version)
    return cfg, ws, trained


def _cli(cfg, *args):
    return main(["--config", "components/configs/tiny.yaml", "--workspace", cfg.workspace, *args])


def test_training_saves_the_window_calibration_with_the_model(champion):
    _, ws, _ = champion
    window = load_window_calibration(ws / "model")
    assert window is not None and window.level == pytest.approx(0.8) and window.rows > 100
    # Later stops wait on more uncertain service before them: their normalised bands are no narrower.
    assert all(lo < 0 < hi for lo, hi in zip(window.q_low, window.q_high))


def test_plan_of_next_week_without_labels(champion, tmp_path, capsys):
    cfg, _, _ = champion
    orders, plan_uri = tmp_path / "orders.parquet", tmp_path / "plan.parquet"
    assert _cli(cfg, "data", "orders", "--out", str(orders)) == 0
    planned = pd.read_parquet(orders)
    assert LABEL not in planned and planned["delivery_id"].is_unique
    assert (
        _cli(cfg, "plan", "--orders", str(orders), "--out", str(plan_uri), "--summary", str(tmp_path / "s.json")) == 0
    )
    assert "planned" in capsys.readouterr().out
    plan = pd.read_parquet(plan_uri)
    assert list(plan.columns) == list(PLAN_COLUMNS)
    assert len(plan) == len(planned) and set(plan["delivery_id"]) == set(planned["delivery_id"])
    assert (plan["low_s"] <= plan["service_time_s"]).all() and (plan["service_time_s"] <= plan["high_s"]).all()
    assert (plan["window_start"] <= plan["planned_arrival"]).all() and (
        plan["planned_arrival"] <= plan["window_end"]
    ).all()
    for _, route in plan.groupby("route_id"):  # in route order: stops, arrivals and windows all move forward
        assert route["stop_index"].is_monotonic_increasing
        for col in ("planned_arrival", "window_start", "window_end"):
            assert route[col].is_monotonic_increasing, col
    summary = json.loads((tmp_path / "s.json").read_text())
    # No labels: nothing to measure.
    assert summary["window_coverage"] is None and summary["level"] == pytest.approx(0.8)


def test_plan_on_labelled_weeks_states_its_coverage(champion, tmp_path):
    """Coverage of the stated 80 % on three later weeks. Tiny weeks are ~25 routes whose stops share a
    day's shock, so one week's coverage moves by several points; three weeks pooled must land near 80 %."""
    from components.learn.planning import plan_file, simulated_orders

    cfg, _, _ = champion
    weeks = [simulated_orders(cfg.data, w, keep_labels=True) for w in (cfg.data.weeks, cfg.data.weeks + 1,
                                                                      cfg.data.weeks + 2)]
    orders = pd.concat(weeks, ignore_index=True)
    orders.to_parquet(tmp_path / "labelled.parquet")
    s = plan_file(cfg, str(tmp_path / "labelled.parquet"), str(tmp_path / "plan.parquet"))
    c = s["window_coverage"]
    assert c["stops"] == len(orders) - orders["route_id"].nunique()  # a route's first stop is its departure
    assert c["coverage_all_stops"] > c["coverage"]
    assert abs(c["coverage"] - 0.8) <= 0.10, c
    assert c["early_share"] + c["late_share"] == pytest.approx(1 - c["coverage"])


def test_plan_pipeline_on_the_local_runner(champion, tmp_path):
    from kfp import local

    from components.learn.planning import plan_file, simulated_orders
    from pipelines.plan_pipeline import servicetime_plan

    cfg, _, trained = champion
    simulated_orders(cfg.data, cfg.data.weeks).to_parquet(tmp_path / "orders.parquet")
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp"), raise_on_error=True)
    servicetime_plan(orders_uri=str(tmp_path / "orders.parquet"), out_uri=str(tmp_path / "plans") + "/",
                            config_json=cfg.model_dump_json())
    plans = list((tmp_path / "plans").glob("*.parquet"))
    assert len(plans) == 1  # a folder out_uri: one plan per run, named by the job id
    plan = pd.read_parquet(plans[0])
    assert list(plan.columns) == list(PLAN_COLUMNS) and np.isfinite(plan["service_time_s"]).all()
    # The same champion, transform and calibration as `servicetime plan`: the same plan.
    direct = plan_file(cfg, str(tmp_path / "orders.parquet"), str(tmp_path / "direct.parquet"))
    assert direct["model_version"] == trained.model_version
    pd.testing.assert_frame_equal(plan, pd.read_parquet(tmp_path / "direct.parquet"))
