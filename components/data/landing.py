"""The landing zone frozen into a dataset version, each batch read once.

Each landing batch's bytes are read a single time (on S3, one download a week): raw ids become
salted keys, tombstoned customers' rows go, and the same bytes are versioned. Nothing is written
back to the landing zone until every batch has passed, so a refused batch (raw ids and no salt)
leaves the whole landing zone as it was.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from components.core.storage import StorageError, join
from components.data.datasets import DatasetStore, Manifest
from components.data.forget import drop_forgotten, tombstones
from components.data.raw_ids import hash_batch


@dataclass(frozen=True)
class Landed:
    manifest: Manifest
    hashed_rows: int  # rows whose raw ids were replaced by keys
    forgotten_rows: int  # rows of tombstoned customers dropped


def freeze_landing(store: DatasetStore, batches: list[str], environ: Mapping[str, str] | None = None) -> Landed:
    """Version these landing batches (hashed and without forgotten customers; a rewritten batch is also
    rewritten in the landing zone, so its raw ids are kept nowhere)."""
    if not batches:
        raise StorageError(f"no raw batches under {join(store.root, 'raw')}: generate data first")
    keys = set(tombstones(store.root, store.storage))
    landed: dict[str, bytes] = {}
    changed: list[str] = []
    hashed = forgotten = 0
    for name in batches:
        data = store.storage.read_bytes(store.raw_uri(name))
        new, n_hashed = hash_batch(name, data, environ)
        new, n_dropped = drop_forgotten(name, new, keys)
        hashed, forgotten = hashed + n_hashed, forgotten + n_dropped
        landed[name] = new
        if new is not data:
            changed.append(name)
    for name in changed:
        store.storage.write_bytes(store.raw_uri(name), landed[name])
    return Landed(store.write_version(landed), hashed, forgotten)
