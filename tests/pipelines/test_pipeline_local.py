"""The KFP pipeline on KFP's local SubprocessRunner, on tiny data, stopping where it must.

The successful end-to-end run is `servicetime run` in test_run_progress (one run, both checks)."""

import json

import pytest

from components.core.storage import Storage, to_parquet_bytes
from components.data.datasets import DatasetStore
from components.steps.ingest import generate_raw
from pipelines.local import run_local
from tests.conftest import tiny_config

pytestmark = pytest.mark.slow


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
