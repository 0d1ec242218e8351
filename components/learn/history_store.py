"""Customer-history snapshots, versioned on their own.

A model bundle carries the snapshot its training weeks gave; that one is frozen
with the model and grows staler every week it serves. This store keeps a fresh
one, rebuilt from every clean row up to the newest accepted batch each time the
data is validated (and by the continual loop each week), without retraining.
The model servers follow ``LATEST`` as they follow the champion alias
(``components.serving.history``); training and evaluation use point-in-time
history over the same clean rows, so all three see one definition.

    <data root>/history/<version>/history.parquet   customer -> count, sum of log-seconds
    <data root>/history/<version>/meta.json         customers, stops, data_until, built_from
    <data root>/history/LATEST                      the newest version
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass

import pandas as pd

from components.core.schema import LABEL, TIMESTAMP
from components.core.storage import Storage, join, to_parquet_bytes
from components.learn.features import HISTORY_FILE, history_snapshot

HISTORY_DIR = "history"
META_FILE = "meta.json"
LATEST = "LATEST"
INPUTS = ("customer_key", LABEL, TIMESTAMP)  # the clean columns a snapshot is built from


@dataclass(frozen=True)
class SnapshotInfo:
    version: str
    customers: int
    stops: int
    data_until: float  # unix time of the newest stop in it
    built_from: str  # the clean dataset version (or the loop's week) it was built from
    created_at: float


def history_root(data_root: str) -> str:
    return join(data_root, HISTORY_DIR)


def refresh(data_root: str, clean: pd.DataFrame, built_from: str, storage: Storage | None = None) -> SnapshotInfo:
    """Build the snapshot of these clean rows, store it as a version (same rows, same version) and
    point ``LATEST`` at it."""
    storage = storage or Storage()
    data = to_parquet_bytes(history_snapshot(clean))
    version = hashlib.sha256(data).hexdigest()[:16]
    root = history_root(data_root)
    until = pd.to_datetime(clean[TIMESTAMP], utc=True).max()
    info = SnapshotInfo(version, int(clean["customer_key"].nunique()), len(clean), float(until.timestamp()),
                        built_from, time.time())
    if not storage.exists(join(root, version, META_FILE)):
        storage.write_bytes(join(root, version, HISTORY_FILE), data)
        storage.write_json(join(root, version, META_FILE), asdict(info))  # last: the version is complete
    storage.write_text(join(root, LATEST), version + "\n")
    return info


def latest_version(root_uri: str, storage: Storage | None = None) -> str | None:
    storage = storage or Storage()
    uri = join(root_uri, LATEST)
    return storage.read_bytes(uri).decode().strip() if storage.exists(uri) else None


def read(root_uri: str, version: str, storage: Storage | None = None) -> tuple[pd.DataFrame, SnapshotInfo]:
    storage = storage or Storage()
    meta = storage.read_json(join(root_uri, version, META_FILE))
    return storage.read_parquet(join(root_uri, version, HISTORY_FILE)), SnapshotInfo(**meta)


def republish(data_root: str, why: str, storage: Storage | None = None) -> SnapshotInfo | None:
    """The newest snapshot, as it now stands, under a new version (after rows left it in place, as a
    forgotten customer's do): the servers follow the new ``LATEST`` and drop the old one from memory."""
    storage = storage or Storage()
    root = history_root(data_root)
    current = latest_version(root, storage)
    if current is None:
        return None
    snapshot, info = read(root, current, storage)
    data = to_parquet_bytes(snapshot)
    version = hashlib.sha256(data + why.encode()).hexdigest()[:16]
    new = SnapshotInfo(version, len(snapshot), info.stops, info.data_until, f"{info.built_from} ({why})", time.time())
    storage.write_bytes(join(root, version, HISTORY_FILE), data)
    storage.write_json(join(root, version, META_FILE), asdict(new))
    storage.write_text(join(root, LATEST), version + "\n")
    return new
