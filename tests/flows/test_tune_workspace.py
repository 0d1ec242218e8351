"""`servicetime tune` on tiny data: a real Ray Tune search, MLflow child runs, and train picking the result up."""

import json
import time

import psutil
import pytest
from mlflow import MlflowClient

from components.learn.tracking import setup
from components.steps.train import train_step
from tests.conftest import tiny_config


def _ray_processes() -> list[str]:
    names = ("raylet", "gcs_server", "ray::")
    return [p.name() for p in psutil.Process().children(recursive=True)
            if any(n in " ".join(p.cmdline() or [p.name()]) for n in names)]


@pytest.mark.slow
def test_tune_four_trials_child_runs_and_train_uses_the_best(tmp_path):
    import ray

    from components.flows.tune import tune_workspace

    ray_before = ray.is_initialized()
    cfg = tiny_config(tmp_path / "ws", **{"train.num_workers": 0})
    data_root = str(tmp_path / "ws" / "data")  # empty: the simulator fills it, as `servicetime run` does
    started = time.perf_counter()
    summary = tune_workspace(cfg, data_root, trials=4)
    assert time.perf_counter() - started < 120

    assert summary["trials"] == 4 and len(summary["child_run_ids"]) == 4
    assert summary["best_val_mae_s"] <= summary["defaults_val_mae_s"]  # trial 0 is the defaults
    assert summary["improvement_pct"] >= 0.0
    if not ray_before:  # this search started Ray, so it must have stopped it, leaving no process behind
        assert not ray.is_initialized()
        assert _ray_processes() == []

    # MLflow: one parent "tune" run, four nested children with their settings and per-epoch val MAE.
    setup(cfg)
    client = MlflowClient()
    parent = client.get_run(summary["mlflow_run_id"])
    assert parent.info.run_name == "tune"
    assert parent.data.metrics["improvement_pct"] == pytest.approx(summary["improvement_pct"])
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(c.info.run_id for c in children) == sorted(summary["child_run_ids"])
    defaults = [c for c in children if c.data.tags["defaults"] == "true"]
    assert len(defaults) == 1 and float(defaults[0].data.params["train.lr"]) == cfg.train.lr
    for child in children:
        assert {"train.lr", "train.hidden", "train.batch_size"} <= set(child.data.params)
        epochs = client.get_metric_history(child.info.run_id, "val_mae_s")
        assert 1 <= len(epochs) <= cfg.train.epochs

    # best.json: TrainConfig fields plus provenance; the report beside it.
    best = json.loads((tmp_path / "ws" / "tuning" / "best.json").read_text())
    assert best["settings"] == summary["best_settings"]
    assert best["provenance"]["trials"] == 4 and best["provenance"]["mlflow_run_id"] == parent.info.run_id
    assert "Hyperparameter search" in (tmp_path / "ws" / "tuning" / "report.md").read_text()

    # A following train step uses the tuned settings and records them.
    features = tmp_path / "ws" / "tuning" / "work" / "features"
    out = train_step(cfg, features, tmp_path / "bundle", summary["data_version"])
    assert out.tuned_from.endswith("tuning/best.json")
    assert {k: out.train_settings[k] for k in best["settings"]} == best["settings"]
    params = client.get_run(out.run_id).data.params
    assert float(params["train.lr"]) == best["settings"]["lr"]
    assert int(params["train.batch_size"]) == best["settings"]["batch_size"]
