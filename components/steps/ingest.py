"""Ingest: freeze the landing zone (or its newest weeks) into an immutable dataset version."""

from __future__ import annotations

import json
from pathlib import Path

from components.core.config import DataConfig
from components.core.storage import to_parquet_bytes
from components.data.datasets import DatasetStore
from components.data.landing import freeze_landing
from components.data.simulator import generate
from components.steps import guarded, record
from components.steps.outcomes import Ingested


def ingest(data_root: str, out_dir: str | Path, last_weeks: int = 0, run_uri: str | None = None,
           simulate_if_empty: DataConfig | None = None) -> Ingested:
    with guarded("ingest", run_uri, uris=(data_root,)):
        return _ingest(data_root, out_dir, last_weeks, run_uri, simulate_if_empty)


def _ingest(data_root: str, out_dir: str | Path, last_weeks: int = 0, run_uri: str | None = None,
            simulate_if_empty: DataConfig | None = None) -> Ingested:
    """Freeze the landing zone into a version. With ``simulate_if_empty``, an empty landing
    zone (a fresh cluster's bucket) is first filled by the simulator, the lab's data source."""
    store = DatasetStore(data_root)
    batches = store.raw_batches()
    if not batches and simulate_if_empty is not None:
        batches = generate_raw(simulate_if_empty, data_root)
    if last_weeks:
        batches = batches[-last_weeks:]
    # Real ids become salted keys before anything is versioned (and before tombstones, which name keys).
    landed = freeze_landing(store, batches)
    manifest = landed.manifest
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").write_text(json.dumps({**manifest.to_dict(), "root": data_root}, indent=2))
    return record(run_uri, Ingested(manifest.version, manifest.rows, len(manifest.batches),
                                    store.version_uri(manifest.version), landed.forgotten_rows,
                                    landed.hashed_rows))


def generate_raw(cfg: DataConfig, data_root: str, weeks: range | None = None) -> list[str]:
    """Run the simulator and land one Parquet file per week in ``<data_root>/raw``."""
    store = DatasetStore(data_root)
    names = []
    for name, frame in generate(cfg, weeks):
        store.storage.write_bytes(store.raw_uri(name), to_parquet_bytes(frame))
        names.append(name)
    return names
