"""Fresh features at serving: the history snapshot is rebuilt from clean rows, versioned on its own,
and the model server follows it without a retraining, exposing its hit rate."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from components.core.schema import LABEL, TIMESTAMP
from components.learn import history_store
from components.learn.features import history_snapshot
from tests.serving.conftest import metric_value


def _clean(keys: list[str], seconds: float, at: str = "2024-03-04") -> pd.DataFrame:
    return pd.DataFrame({"customer_key": keys, LABEL: seconds, TIMESTAMP: pd.Timestamp(at, tz="UTC")})


def test_a_snapshot_is_a_version_of_its_rows_and_latest_moves(tmp_path):
    root = str(tmp_path / "data")
    first = history_store.refresh(root, _clean(["a", "a", "b"], 100.0), built_from="v1")
    again = history_store.refresh(root, _clean(["a", "a", "b"], 100.0), built_from="v1")
    assert again.version == first.version and first.customers == 2 and first.stops == 3
    newer = history_store.refresh(root, _clean(["a", "a", "b", "c"], 100.0, at="2024-03-11"), built_from="v2")
    hist = history_store.history_root(root)
    assert history_store.latest_version(hist) == newer.version != first.version
    snapshot, info = history_store.read(hist, newer.version)
    pd.testing.assert_frame_equal(snapshot, history_snapshot(_clean(["a", "a", "b", "c"], 100.0)))
    assert info.data_until == pd.Timestamp("2024-03-11", tz="UTC").timestamp() and info.built_from == "v2"


def test_the_validate_step_rebuilds_the_history_from_every_clean_row(tiny_cfg, tmp_path):
    from components.steps.ingest import generate_raw, ingest
    from components.steps.validate import CLEAN_FILE, validate_dataset

    root = str(tmp_path / "data")
    generate_raw(tiny_cfg.data, root)
    ing = ingest(root, tmp_path / "ingest")
    validated = validate_dataset(tiny_cfg, root, ing.data_version, tmp_path / "validate", fail_on_rejected=False)
    hist = history_store.history_root(root)
    snapshot, info = history_store.read(hist, history_store.latest_version(hist))
    clean = pd.read_parquet(tmp_path / "validate" / CLEAN_FILE)
    assert info.built_from == validated.clean_version and info.stops == len(clean)
    pd.testing.assert_frame_equal(snapshot, history_snapshot(clean))


@pytest.mark.slow
def test_the_server_follows_a_refreshed_snapshot_and_counts_its_hits(trained, tmp_path, serve_app):
    import httpx

    from components.serving import metric_names as m
    from components.serving.settings import ServerSettings

    root = str(tmp_path / "data")
    stops = trained.stops(20)
    keys = [s["customer_key"] for s in stops]
    server = serve_app(ServerSettings(model_path=str(trained.bundle), history_uri=history_store.history_root(root),
                                      history_every_s=0.2, prediction_log_uri=None))

    def ask() -> tuple[np.ndarray, str]:
        body = httpx.post(f"{server.url}/predict", json={"stops": stops}).json()
        return np.array([p["service_time_s"] for p in body["predictions"]]), httpx.get(f"{server.url}/metrics").text

    before, text = ask()  # no snapshot written yet: the bundle's own answers
    bundle_customers = metric_value(text, m.HISTORY_CUSTOMERS)
    assert bundle_customers > 100
    # A refresh in which every one of these customers has a long history of long stops.
    info = history_store.refresh(root, _clean(keys * 30, 1500.0, at="2024-01-01"), built_from="fresh")
    deadline = time.monotonic() + 10
    while metric_value(ask()[1], m.HISTORY_CUSTOMERS) != info.customers and time.monotonic() < deadline:
        time.sleep(0.2)
    after, text = ask()
    assert metric_value(text, m.HISTORY_CUSTOMERS) == info.customers
    assert np.mean(after) > np.mean(before)  # long histories: longer predictions, with no new model
    lookups, found = metric_value(text, f"{m.HISTORY_LOOKUPS}_total"), metric_value(text, f"{m.HISTORY_FOUND}_total")
    assert found >= len(stops) * 2 and lookups >= found  # every stop of the later asks was a hit
    newest = max(pd.Timestamp(s[TIMESTAMP]).timestamp() for s in stops)
    assert metric_value(text, m.HISTORY_DATA_AGE) == pytest.approx(newest - info.data_until, abs=1.0)
