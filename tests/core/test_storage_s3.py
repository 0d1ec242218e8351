"""Storage and dataset versions on a real S3 server (SeaweedFS on loopback) and on local disk."""

import os

import pandas as pd
import pytest

from components.core.storage import Storage, StorageError, to_parquet_bytes
from components.data.datasets import DatasetStore

pytestmark = pytest.mark.slow


def test_s3_round_trip(s3_server):
    storage = Storage()
    frame = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    storage.write_parquet("s3://st-test/frames/f.parquet", frame)
    pd.testing.assert_frame_equal(storage.read_parquet("s3://st-test/frames/f.parquet"), frame)
    storage.write_json("s3://st-test/meta/m.json", {"k": 1})
    assert storage.read_json("s3://st-test/meta/m.json") == {"k": 1}
    assert storage.list("s3://st-test/frames") == ["s3://st-test/frames/f.parquet"]
    assert storage.exists("s3://st-test/meta/m.json") and not storage.exists("s3://st-test/meta/none.json")
    with pytest.raises(StorageError, match="cannot read s3://st-test/missing"):
        storage.read_bytes("s3://st-test/missing")


@pytest.mark.parametrize("root", ["s3://st-datasets/lab", "local"])
def test_same_data_same_version_and_manifest(root, s3_server, tmp_path, tiny_weeks):
    root = str(tmp_path / "data") if root == "local" else root
    store = DatasetStore(root)
    batches = {name: to_parquet_bytes(frame) for name, frame in tiny_weeks[:3]}
    first = store.write_version(batches)
    again = store.write_version(batches)
    assert first.version == again.version
    manifest = store.manifest(first.version).to_dict()
    assert manifest["weeks"] == 3 and manifest["rows"] == sum(len(f) for _, f in tiny_weeks[:3])
    assert manifest["schema_version"] == "1" and manifest["parent"] is None
    assert len(manifest["batch_hashes"]) == 3
    # More data: a new version whose parent is the previous one.
    more = store.write_version({**batches, tiny_weeks[3][0]: to_parquet_bytes(tiny_weeks[3][1])})
    assert more.version != first.version and more.parent == first.version
    assert store.latest() == more.version
    back = store.read_batch(first.version, tiny_weeks[0][0])
    pd.testing.assert_frame_equal(back, tiny_weeks[0][1], check_dtype=False)


def test_landing_zone_to_version_on_s3(s3_server, tiny_cfg):
    from components.steps.ingest import generate_raw, ingest

    root = "s3://st-landing/lab"
    names = generate_raw(tiny_cfg.data, root, range(4))
    assert DatasetStore(root).raw_batches() == names
    out = ingest(root, tiny_cfg.workspace + "/ingest", last_weeks=2)
    assert out.weeks == 2 and out.uri.startswith("s3://st-landing/lab/datasets/")


def test_empty_landing_zone_is_filled_by_the_simulator_when_asked(s3_server, tiny_cfg):
    """A fresh cluster's bucket holds no data: the first run lands the simulator's weeks."""
    from components.steps.ingest import ingest

    root = "s3://st-fresh/lab"
    with pytest.raises(StorageError, match="generate data first"):
        ingest(root, tiny_cfg.workspace + "/no")
    out = ingest(root, tiny_cfg.workspace + "/yes", simulate_if_empty=tiny_cfg.data)
    assert out.weeks == tiny_cfg.data.weeks and len(DatasetStore(root).raw_batches()) == tiny_cfg.data.weeks


def test_a_second_server_ignores_the_callers_aws_credentials(s3_server, tmp_path):
    """The environment points at the fixture's server; a new server must still use its own keys."""
    from components.core.storage import S3Settings
    from components.devstack.s3server import start_s3_server

    assert os.environ["AWS_ACCESS_KEY_ID"] == s3_server.access_key
    other = start_s3_server(tmp_path / "other", access_key="servicetime", secret_key="a-different-secret", timeout=60)
    try:
        storage = Storage(S3Settings(other.endpoint_url, "servicetime", "a-different-secret"))
        storage.write_bytes("s3://second/x", b"ok")
        assert storage.read_bytes("s3://second/x") == b"ok"
    finally:
        other.stop()
