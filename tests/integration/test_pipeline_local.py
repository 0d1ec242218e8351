"""The whole KFP pipeline on KFP's local SubprocessRunner, on tiny data."""

import json
from pathlib import Path

import pytest

from components.core.storage import Storage, to_parquet_bytes
from components.data.datasets import DatasetStore
from components.learn import tracking
from components.steps.ingest import generate_raw
from pipelines.local import run_local
from tests.conftest import tiny_config

pytestmark = pytest.mark.slow


def test_full_pipeline_registers_and_deploys_a_champion(tmp_path):
    cfg = tiny_config(tmp_path / "ws", **{"train.num_workers": 2, "train.epochs": 2})
    root = str(tmp_path / "ws" / "data")
    generate_raw(cfg.data, root)
    summary = run_local(cfg, root, str(tmp_path / "ws" / "runs" / "r1"))
    assert summary["status"] == "SUCCEEDED", summary.get("error")
    assert summary["steps_completed"] == ["ingest", "validate", "features", "train", "evaluate", "register", "deploy"]
    assert summary["rows"]["in"] == summary["rows"]["accepted"] + summary["rows"]["quarantined"]
    assert summary["metrics"]["candidate"]["mae"] < summary["metrics"]["baseline"]["mae"]
    assert summary["metrics"]["champion"] is None  # the first run has no champion to beat
    assert summary["verdict"]["blessed"] is True
    assert summary["route_kpi"]["candidate"]["delay_std_s"] < summary["route_kpi"]["baseline"]["delay_std_s"]
    assert summary["training"]["num_workers"] == 2
    # The registered model and its alias.
    tracking.setup(cfg)
    assert summary["model"]["version"] == tracking.alias_version(cfg, tracking.CHAMPION) == "1"
    assert summary["model"]["uri"] == f"models:/servicetime/{summary['model']['version']}"
    # Artifacts where the summary says they are.
    art = summary["artifacts"]
    assert (Path(art["model_bundle"]) / "model.pt").exists()
    assert "BLESSED" in Path(art["evaluation_report"]).read_text()
    assert Path(art["features"], "train.npz").exists()
    assert Storage().read_json(art["summary"])["status"] == "SUCCEEDED"
    markdown = list(Path(art["kfp_outputs"]).rglob("evaluate-op/report"))
    assert markdown and "data:image/png;base64," in markdown[0].read_text()  # self-contained for the KFP UI


def test_corrupted_batch_stops_the_run_at_validation_and_keeps_the_rows(tmp_path):
    cfg = tiny_config(tmp_path / "ws", **{"train.num_workers": 0})
    root = str(tmp_path / "ws" / "data")
    names = generate_raw(cfg.data, root)
    store = DatasetStore(root)
    bad_name = names[-1]
    bad = Storage().read_parquet(store.raw_uri(bad_name))
    bad["service_time_s"] = bad["service_time_s"] / 60  # the feed switched to minutes
    Storage().write_bytes(store.raw_uri(bad_name), to_parquet_bytes(bad))

    summary = run_local(cfg, root, str(tmp_path / "ws" / "runs" / "bad"))
    assert summary["status"] == "FAILED"
    assert summary["steps_completed"] == ["ingest", "validate"]
    assert "looks like minutes" in json.dumps(summary["rejected_batches"][bad_name])
    quarantined = Storage().read_parquet(f"{summary['artifacts']['quarantine']}/{bad_name}.parquet")
    assert len(quarantined) == len(bad)
    assert quarantined["quarantine_reason"].str.startswith("batch rejected: service_time_s looks like minutes").all()
    assert summary["model"]["version"] is None  # nothing was trained or registered
