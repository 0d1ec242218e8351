"""`servicetime monitor`: the prediction log joined with arrived labels gives known online figures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from components.core.schema import ID, LABEL
from components.core.storage import to_parquet_bytes
from components.data.datasets import DatasetStore
from components.serving.monitor import (
    join_labels,
    online_report,
    read_latest_report,
    run_monitor,
)
from components.serving.predlog import PredictionLog, Served, read_log
from tests.conftest import tiny_config
from tests.serving.conftest import serve_app  # noqa: F401 (real servers on loopback, stopped after the test)


class _Model:
    """What the log writer reads from a loaded model: name, version, its snapshot and vocabulary."""

    def __init__(self, customers: list[str], areas: list[str]):
        self.name, self.version = "servicetime", "7"
        self.predictor = type("P", (), {})()
        self.predictor.history = pd.DataFrame({"customer_key": customers})
        self.predictor.transform = type("T", (), {"vocab": {"area_id": areas}})()


@pytest.fixture
def logged(tiny_weeks, tmp_path):
    """Two arrived weeks and a log of predictions for them: urban +30 s, others -10 s, a known interval."""
    cfg = tiny_config(tmp_path / "ws", **{"monitor.min_slice_rows": 5})
    store = DatasetStore(str(tmp_path / "ws" / "data"))
    frames = [f.copy() for _, f in tiny_weeks[8:10]]
    for (name, _), frame in zip(tiny_weeks[8:10], frames, strict=True):
        store.storage.write_bytes(store.raw_uri(name), to_parquet_bytes(frame))
    both = pd.concat(frames, ignore_index=True)
    both = both[both[LABEL].between(20, 3600)].drop_duplicates(ID).reset_index(drop=True)  # what arrives as truth
    customers = both["customer_key"].astype(str).unique()[::2].tolist()  # half the customers "known"
    areas = sorted(both["area_id"].astype(str).unique())[1:]  # one area "new"
    model = _Model(customers, areas)
    writer = PredictionLog(str(tmp_path / "ws" / "predictions"), flush_rows=500, flush_s=60)
    writer.start()
    urban = (both["area_type"] == "urban").to_numpy()
    y = both[LABEL].to_numpy(float)
    pred = y + np.where(urban, 30.0, -10.0)
    low, high = pred - 20, pred + 20  # urban labels fall outside (30 s away), the others inside
    for start in range(0, len(both), 100):
        part = both.iloc[start : start + 100]
        sl = slice(start, start + len(part))
        cols = {c: part[c].astype(str).tolist() for c in (ID, "route_id", "customer_key", "area_id")}
        cols["stop_index"] = part["stop_index"].to_numpy(float)
        writer.submit(Served(cols, pred[sl], low[sl], high[sl], np.ones(len(part), dtype=bool), model,
                             pd.Timestamp(part["delivered_at"].iloc[0]).timestamp() - 7 * 86400))
    writer.close()
    return cfg, both, customers, areas


def test_join_and_figures_overall_and_per_slice(logged):
    cfg, both, customers, areas = logged
    predictions = read_log(cfg.monitor.prediction_log_uri or f"{cfg.workspace}/predictions")
    labels = both.assign(batch="b")
    # A delivery asked twice (a re-planned route): the later answer counts.
    again = predictions.iloc[[0]].assign(service_time_s=predictions["service_time_s"].iloc[0] + 1000.0,
                                         predicted_at=predictions["predicted_at"].iloc[0] + pd.Timedelta(hours=1))
    joined = join_labels(pd.concat([predictions, again], ignore_index=True), labels)
    assert len(joined) == len(both)
    first = joined.set_index("delivery_id").loc[predictions["delivery_id"].iloc[0]]
    assert first["predicted_s"] - first[LABEL] > 900

    report = online_report(cfg, predictions, labels)
    rows = {r["slice"]: r for r in report["slices"]}
    urban = (both["area_type"] == "urban").mean()
    assert report["rows_joined"] == len(both) and report["join_rate"] == 1.0 and report["models"] == ["7"]
    assert rows["all"]["bias"] == pytest.approx(30 * urban - 10 * (1 - urban), abs=1e-3)
    assert rows["area_type=urban"]["bias"] == pytest.approx(30.0) and rows["area_type=urban"]["mae"] == pytest.approx(
        30.0
    )
    assert rows["area_type=rural"]["bias"] == pytest.approx(-10.0)
    assert rows["area_type=urban"]["coverage"] == 0.0 and rows["area_type=suburban"]["coverage"] == 1.0
    assert rows["all"]["coverage"] == pytest.approx(1 - urban, abs=1e-3)
    new_customers = (~both["customer_key"].astype(str).isin(customers)).sum()
    assert (
        rows["new customer"]["rows"] == new_customers
        and rows["returning customer"]["rows"] == len(both) - new_customers
    )
    assert rows["new area"]["rows"] == (~both["area_id"].astype(str).isin(areas)).sum() > 0
    # Late share: predicted too long everywhere but urban, so the arrival is late only after urban stops.
    assert 0.0 <= rows["all"]["late_share"] <= 1.0


def test_monitor_run_writes_a_versioned_report_logs_mlflow_and_the_server_exposes_it(logged, serve_app):  # noqa: F811
    import httpx
    from mlflow import MlflowClient

    from components.learn import tracking
    from components.serving.settings import ServerSettings
    from tests.serving.conftest import metric_value

    cfg, both, *_ = logged
    report = run_monitor(cfg)
    root = f"{cfg.workspace}/monitor"
    latest = read_latest_report(root)
    assert latest["version"] == report["version"] and latest["rows_joined"] == len(both)
    assert len(latest["by_batch"]) == 2
    again = run_monitor(cfg, mlflow_log=False)
    assert again["version"] == report["version"]  # same inputs, same version
    tracking.setup(cfg)
    metrics = MlflowClient().get_run(report["mlflow_run_id"]).data.metrics
    assert metrics["online_bias__area_type_urban"] == pytest.approx(30.0)
    assert metrics["online_rows"] == len(both)

    server = serve_app(ServerSettings(model_path=str(cfg.workspace) + "/no-model", online_report_uri=root,
                                      reload_interval_s=60))
    text = httpx.get(f"{server.url}/metrics").text
    assert metric_value(text, "servicetime_online_bias_seconds", slice="area_type=urban") == pytest.approx(30.0)
    assert metric_value(text, "servicetime_online_interval_coverage", slice="area_type=urban") == 0.0
    assert metric_value(text, "servicetime_online_joined_rows", slice="all") == len(both)


def test_monitor_cli(logged, capsys):
    from components.cli.main import main

    cfg, both, *_ = logged
    assert main(["--workspace", cfg.workspace, "--config", "components/configs/tiny.yaml", "--set",
                 "monitor.min_slice_rows=5", "monitor", "run", "--no-mlflow"]) == 0
    out = capsys.readouterr().out
    assert f"{len(both)} of {len(both)} logged predictions joined" in out and "area_type=urban" in out
    assert main(["--workspace", cfg.workspace, "monitor", "show"]) == 0


def test_the_monitor_pipeline_on_the_local_runner_writes_the_same_report(logged, tmp_path):
    """What the cluster's weekly run does (servicetime-monitor), on KFP's local runner."""
    from kfp import local

    from pipelines.monitor_pipeline import servicetime_monitor

    cfg, both, *_ = logged
    direct = run_monitor(cfg, mlflow_log=False)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp"), raise_on_error=True)
    servicetime_monitor(data_root=f"{cfg.workspace}/data", log_uri=f"{cfg.workspace}/predictions",
                        report_uri=str(tmp_path / "reports"), config_json=cfg.model_dump_json())
    report = read_latest_report(str(tmp_path / "reports"))
    assert report["rows_joined"] == len(both) and report["slices"] == direct["slices"]
    assert report["version"] == direct["version"]  # the same log and batches: the same report
    markdown = next((tmp_path / "kfp").rglob("report"))
    assert "| area_type=urban |" in markdown.read_text()
