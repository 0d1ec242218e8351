"""Forgetting a customer: a tombstone, then every stored row of theirs removed.

    servicetime data forget --customer KEY

The tombstone (``<data root>/tombstones.json``: the key, when, why) is written
first, so a crash half-way leaves the request on record and a rerun finishes it;
ingest drops tombstoned keys from every batch that arrives later.

What is rewritten, under the data root and the workspace (local or ``s3://``):

* every Parquet file with a ``customer_key`` column loses the customer's rows:
  raw batches, quarantine, run folders (features, history snapshots), the model
  bundles MLflow keeps (their customer-history table: the network itself has no
  per-customer weights, so a rewritten bundle serves the customer as a new one);
* every Parquet file with a ``delivery_id`` column loses the customer's
  deliveries (the prediction log holds ids, not keys);
* dataset versions are immutable and named by their content, so each one that
  held the customer is written again as a new version, the old one deleted, and
  ``datasets/reversioned.json`` says which replaced which and why (``LATEST``
  follows).
"""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass, field, replace

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from components.core.schema import ID
from components.core.storage import Storage, StorageError, join
from components.data.datasets import DatasetStore, Manifest

log = logging.getLogger(__name__)

TOMBSTONE_FILE = "tombstones.json"
REVERSIONED_FILE = "reversioned.json"  # under <root>/datasets
KEY = "customer_key"


@dataclass
class Forgotten:
    key: str
    deliveries: int = 0  # the customer's delivery ids found
    rows_removed: int = 0
    files: list[str] = field(default_factory=list)  # rewritten in place
    versions: dict[str, str] = field(default_factory=dict)  # old dataset version -> its replacement
    unreadable: list[str] = field(default_factory=list)  # Parquet files that could not be checked


def tombstones(data_root: str, storage: Storage | None = None) -> dict[str, dict]:
    """The forgotten keys: key -> {"at": unix time, "reason": ...}."""
    storage = storage or Storage()
    uri = join(data_root, TOMBSTONE_FILE)
    return storage.read_json(uri) if storage.exists(uri) else {}


def add_tombstone(data_root: str, key: str, reason: str, storage: Storage | None = None) -> None:
    storage = storage or Storage()
    marks = tombstones(data_root, storage)
    marks.setdefault(key, {"at": time.time(), "reason": reason})
    storage.write_json(join(data_root, TOMBSTONE_FILE), marks)


def _read(storage: Storage, uri: str) -> pa.Table:
    return pq.read_table(io.BytesIO(storage.read_bytes(uri)))


def _bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def _keep(table: pa.Table, keys: set[str], ids: set[str]) -> pa.Array | None:
    """The rows to keep, or None when the table holds none of the keys and ids."""
    drop = None
    for column, values in ((KEY, keys), (ID, ids)):
        if column in table.column_names and values:
            hit = pc.fill_null(pc.is_in(pc.cast(table[column], pa.string()), pa.array(sorted(values))), False)
            drop = hit if drop is None else pc.or_(drop, hit)
    if drop is None or not pc.any(drop).as_py():
        return None
    return pc.invert(drop)


def filter_rows(table: pa.Table, keys: set[str], ids: set[str] | None = None) -> tuple[pa.Table, int]:
    """The table without the rows of ``keys`` (by customer) or ``ids`` (by delivery); and how many went."""
    keep = _keep(table, keys, ids or set())
    if keep is None:
        return table, 0
    kept = table.filter(keep)
    return kept, table.num_rows - kept.num_rows


def _parquet_files(storage: Storage, roots: list[str]) -> list[str]:
    seen: set[str] = set()
    for root in roots:
        seen.update(storage.list(root, suffix=".parquet"))
    return sorted(seen)


def _delivery_ids(storage: Storage, files: list[str], key: str, out: Forgotten) -> set[str]:
    ids: set[str] = set()
    for uri in files:
        try:
            table = _read(storage, uri)
        except (pa.ArrowException, OSError, ValueError):
            out.unreadable.append(uri)
            continue
        if KEY in table.column_names and ID in table.column_names:
            mine = table.filter(pc.fill_null(pc.equal(pc.cast(table[KEY], pa.string()), key), False))
            ids.update(str(v) for v in mine[ID].to_pylist() if v is not None)
    return ids


def _reversion(store: DatasetStore, keys: set[str], ids: set[str], reason: str, out: Forgotten) -> None:
    """Write each dataset version that held the customer again, without them; delete the old one."""
    storage, latest = store.storage, store.latest()
    manifests = [Manifest.from_dict(storage.read_json(u))
                 for u in storage.list(join(store.root, "datasets"), suffix="manifest.json")]
    mapping_uri = join(store.root, "datasets", REVERSIONED_FILE)
    mapping = storage.read_json(mapping_uri) if storage.exists(mapping_uri) else {}
    # Raw versions first: a clean version's parent is a raw one, and must name its replacement.
    for old in sorted(manifests, key=lambda m: m.kind != "raw"):
        batches, removed = {}, 0
        for name in old.batches:
            data = storage.read_bytes(join(store.version_uri(old.version), f"{name}.parquet"))
            if name in old.unreadable:
                batches[name] = data
                continue
            table, n = filter_rows(pq.read_table(io.BytesIO(data)), keys, ids)
            batches[name], removed = (_bytes(table) if n else data), removed + n
        if not removed:
            continue
        parent = out.versions.get(old.parent or "", old.parent)
        new = store.write_version(batches, kind=old.kind, parent=parent)
        if new.parent != parent:  # write_version gives a raw version without one the LATEST as parent
            new = replace(new, parent=parent)
            storage.write_json(join(store.version_uri(new.version), "manifest.json"), new.to_dict())
        storage.delete_prefix(store.version_uri(old.version))
        mapping[old.version] = {"version": new.version, "why": reason, "rows_removed": removed, "at": time.time()}
        out.versions[old.version] = new.version
        out.rows_removed += removed
        log.info("dataset version %s -> %s (%d rows of the customer removed)", old.version, new.version, removed)
    if out.versions:
        storage.write_json(mapping_uri, mapping)
        # write_version moved LATEST to whichever raw version it wrote last: point it where it belongs.
        if latest is not None:
            storage.write_text(join(store.root, "datasets", "LATEST"), out.versions.get(latest, latest) + "\n")


def forget_customer(key: str, data_root: str, roots: list[str], reason: str = "erasure request",
                    storage: Storage | None = None) -> Forgotten:
    """Tombstone ``key`` and remove the customer's rows from every Parquet file under the data root and
    ``roots`` (the workspace, an artifact store), dataset versions re-versioned."""
    storage = storage or Storage()
    out = Forgotten(key)
    add_tombstone(data_root, key, reason, storage)
    store = DatasetStore(data_root, storage)
    files = _parquet_files(storage, [data_root, *roots])
    ids = _delivery_ids(storage, files, key, out)
    out.deliveries = len(ids)
    _reversion(store, {key}, ids, f"forgot customer {key}: {reason}", out)
    versions_prefix = join(store.root, "datasets") + "/"
    for uri in files:
        if uri.startswith(versions_prefix) or uri in out.unreadable:
            continue  # re-versioned above, or could not be read
        try:
            table, n = filter_rows(_read(storage, uri), {key}, ids)
        except StorageError:
            continue  # gone since the listing (an old dataset version deleted above)
        if n:
            storage.write_bytes(uri, _bytes(table))
            out.files.append(uri)
            out.rows_removed += n
    return out


def drop_forgotten(name: str, data: bytes, keys: set[str]) -> tuple[bytes, int]:
    """Ingest's guard for one landing batch: its bytes without the rows of tombstoned customers, and how many
    went (unchanged and 0 when none, or when it cannot be read: validation quarantines it with its reason)."""
    if not keys:
        return data, 0
    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowException, OSError, ValueError):
        return data, 0
    table, n = filter_rows(table, keys)
    if not n:
        return data, 0
    log.info("batch %s: %d rows of forgotten customers dropped at ingest", name, n)
    return _bytes(table), n
