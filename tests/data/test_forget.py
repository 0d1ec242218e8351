"""Forgetting a customer: tombstoned, gone from every Parquet file, dropped at ingest; training still works."""

import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.core.schema import ID
from components.data.forget import REVERSIONED_FILE, filter_rows, forget_customer, tombstones
from tests.conftest import tiny_config


def test_filter_rows_by_customer_and_by_delivery():
    table = pa.table({"customer_key": ["a", "b", None, "a"], ID: ["1", "2", "3", "4"]})
    kept, n = filter_rows(table, {"a"})
    assert n == 2 and kept["customer_key"].to_pylist() == ["b", None]
    log = pa.table({ID: ["1", "9", None], "service_time_s": [1.0, 2.0, 3.0]})  # the prediction log: ids only
    kept, n = filter_rows(log, {"a"}, {"1", "4"})
    assert n == 1 and kept[ID].to_pylist() == ["9", None]
    same, n = filter_rows(table, {"zz"}, {"99"})
    assert n == 0 and same is table


def _holds(path, key: str, ids: set[str]) -> bool:
    table = pq.read_table(path)
    keys = set(table["customer_key"].to_pylist()) if "customer_key" in table.column_names else set()
    deliveries = set(table[ID].to_pylist()) if ID in table.column_names else set()
    return key in keys or bool(ids & deliveries)


@pytest.mark.slow
def test_a_forgotten_customer_is_gone_everywhere_and_training_still_works(tmp_path):
    from components.steps.featurize import featurize
    from components.steps.ingest import generate_raw, ingest
    from components.steps.train import train_step
    from components.steps.validate import CLEAN_FILE, validate_dataset

    ws = tmp_path / "ws"
    cfg = tiny_config(ws, **{"train.num_workers": 0, "train.epochs": 2})
    root = str(ws / "data")
    names = generate_raw(cfg.data, root)

    def run(tag: str):
        ing = ingest(root, ws / tag / "ingest")
        val = validate_dataset(cfg, root, ing.data_version, ws / tag / "validate", fail_on_rejected=False)
        featurize(cfg, ws / tag / "validate" / CLEAN_FILE, ws / tag / "features")
        return ing, train_step(cfg, ws / tag / "features", ws / tag / "model", val.clean_version)

    run("before")
    raw = pd.concat([pd.read_parquet(ws / "data" / "raw" / f"{n}.parquet") for n in names])
    key = str(raw["customer_key"].value_counts().index[0])
    ids = set(raw.loc[raw["customer_key"] == key, ID].astype(str))
    log_dir = ws / "predictions" / "day=2024-03-01"
    log_dir.mkdir(parents=True)
    pq.write_table(pa.table({ID: [*sorted(ids)[:3], "someone-else"], "service_time_s": [1.0, 2.0, 3.0, 4.0]}),
                   log_dir / "part-0.parquet")
    holding = [p for p in ws.rglob("*.parquet") if _holds(p, key, ids)]
    assert len(holding) > 10  # raw, versions, quarantine, features, the bundle's history, the log

    from components.learn import history_store

    hist = history_store.history_root(root)
    followed = history_store.latest_version(hist)
    out = forget_customer(key, root, [str(ws)], reason="test")
    republished = history_store.republish(root, "forgot a customer: test")
    assert republished.version != followed == history_store.read(hist, followed)[1].version
    assert history_store.latest_version(hist) == republished.version  # the servers move to it
    assert not [p for p in ws.rglob("*.parquet") if _holds(p, key, ids)]
    assert out.rows_removed > 0 and out.deliveries == len(ids) and not out.unreadable
    assert pq.read_table(log_dir / "part-0.parquet")[ID].to_pylist() == ["someone-else"]
    assert key in tombstones(root)
    mapping = json.loads((ws / "data" / "datasets" / REVERSIONED_FILE).read_text())
    assert set(mapping) == set(out.versions) and all("test" in m["why"] for m in mapping.values())
    latest = (ws / "data" / "datasets" / "LATEST").read_text().strip()
    assert (ws / "data" / "datasets" / latest / "manifest.json").exists()
    assert not any((ws / "data" / "datasets" / old).exists() for old in out.versions)
    manifests = {v: json.loads((ws / "data" / "datasets" / v / "manifest.json").read_text())
                 for v in out.versions.values()}
    assert sorted(m["kind"] for m in manifests.values()) == ["clean", "raw"]
    raw_version = next(v for v, m in manifests.items() if m["kind"] == "raw")
    assert manifests[raw_version]["parent"] is None
    assert next(m for m in manifests.values() if m["kind"] == "clean")["parent"] == raw_version

    # A later batch still carrying the key: ingest drops it before it is versioned.
    late = raw[raw["customer_key"] == key].head(3).assign(**{ID: ["L1", "L2", "L3"]})
    pd.concat([pd.read_parquet(ws / "data" / "raw" / f"{names[-1]}.parquet"), late]).to_parquet(
        ws / "data" / "raw" / f"{names[-1]}.parquet", index=False)
    ing, trained = run("after")
    assert ing.forgotten_rows == 3 and trained.model_version
    assert not [p for p in ws.rglob("*.parquet") if _holds(p, key, ids | {"L1", "L2", "L3"})]
