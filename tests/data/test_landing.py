"""Ingest reads each landing batch once, and a refused batch leaves the whole landing zone as it landed."""

import pandas as pd
import pytest

from components.core.keys import SALT_ENV, SaltError
from components.core.storage import to_parquet_bytes
from components.data.datasets import DatasetStore
from components.data.forget import add_tombstone
from components.data.landing import freeze_landing
from tests.data.test_raw_ids import SALT, _raw_export


def _land(tmp_path, tiny_weeks, raw_second: bool):
    store = DatasetStore(str(tmp_path / "data"))
    (n1, w1), (n2, w2) = tiny_weeks[:2]
    store.storage.write_bytes(store.raw_uri(n1), to_parquet_bytes(w1))
    store.storage.write_bytes(store.raw_uri(n2), to_parquet_bytes(_raw_export(w2) if raw_second else w2))
    forgotten = w1["customer_key"].iloc[0]
    add_tombstone(store.root, forgotten, "test", store.storage)
    return store, [n1, n2], forgotten, int((w1["customer_key"] == forgotten).sum())


def test_each_landing_batch_is_read_once_hashed_filtered_and_versioned(tmp_path, tiny_weeks, monkeypatch):
    store, names, forgotten, rows = _land(tmp_path, tiny_weeks, raw_second=True)
    reads = []
    read_bytes = store.storage.read_bytes
    monkeypatch.setattr(store.storage, "read_bytes", lambda uri: reads.append(uri) or read_bytes(uri))
    landed = freeze_landing(store, names, {SALT_ENV: SALT})
    batches = [uri for uri in reads if uri.endswith(".parquet")]
    assert sorted(batches) == sorted(store.raw_uri(n) for n in names)  # one read a batch
    assert landed.forgotten_rows == rows > 0 and landed.hashed_rows == len(tiny_weeks[1][1])
    version = pd.concat([store.read_batch(landed.manifest.version, n) for n in names])
    assert forgotten not in set(version["customer_key"]) and "customer_id" not in version.columns
    # The landing zone holds what was versioned: no raw id and no forgotten customer kept there.
    assert [store.storage.read_bytes(store.raw_uri(n)) for n in names] == [
        store.storage.read_bytes(f"{store.version_uri(landed.manifest.version)}/{n}.parquet") for n in names]


def test_a_refused_batch_leaves_every_landing_batch_as_it_landed(tmp_path, tiny_weeks):
    store, names, _, _ = _land(tmp_path, tiny_weeks, raw_second=True)
    before = [store.storage.read_bytes(store.raw_uri(n)) for n in names]
    with pytest.raises(SaltError, match=f"landing batch {names[1]} carries raw ids"):
        freeze_landing(store, names, {})
    # The first batch had a forgotten customer's rows to drop; it was not rewritten, since the run stopped.
    assert [store.storage.read_bytes(store.raw_uri(n)) for n in names] == before
    assert store.latest() is None
