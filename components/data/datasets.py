"""Versioned datasets: a version is the content hash of its weekly batches.

Layout under a root URI (local or ``s3://``)::

    <root>/raw/<batch>.parquet                  landing zone the simulator writes
    <root>/datasets/<version>/<batch>.parquet   an immutable dataset version
    <root>/datasets/<version>/manifest.json     weeks, rows, schema version, hash, parent
    <root>/datasets/LATEST                      the newest version id

Writing the same batches twice yields the same version and writes nothing new.
"""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass, field

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from components.core.schema import SCHEMA_VERSION
from components.core.storage import Storage, StorageError, join

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Manifest:
    version: str
    batches: dict[str, int]  # batch name -> rows
    batch_hashes: dict[str, str]
    schema_version: str
    parent: str | None
    kind: str = "raw"
    # Batches whose bytes are kept in the version but cannot be parsed (name -> why); validation rejects them.
    unreadable: dict[str, str] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(self.batches.values())

    def to_dict(self) -> dict:
        return {
            "version": self.version,
            "kind": self.kind,
            "batches": self.batches,
            "batch_hashes": self.batch_hashes,
            "rows": self.rows,
            "weeks": len(self.batches),
            "schema_version": self.schema_version,
            "parent": self.parent,
            "unreadable": self.unreadable,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Manifest:
        return cls(
            d["version"],
            d["batches"],
            d["batch_hashes"],
            d["schema_version"],
            d.get("parent"),
            d.get("kind", "raw"),
            d.get("unreadable") or {},
        )


def content_version(batch_hashes: dict[str, str], kind: str = "raw") -> str:
    """The version id: a hash over sorted (batch name, batch content hash) pairs."""
    h = hashlib.sha256(f"{kind}:{SCHEMA_VERSION}".encode())
    for name in sorted(batch_hashes):
        h.update(f"{name}={batch_hashes[name]};".encode())
    return h.hexdigest()[:16]


class DatasetStore:
    def __init__(self, root_uri: str, storage: Storage | None = None):
        self.root = root_uri.rstrip("/")
        self.storage = storage or Storage()

    # -- the landing zone ---------------------------------------------------------
    def raw_uri(self, batch: str) -> str:
        return join(self.root, "raw", f"{batch}.parquet")

    def raw_batches(self) -> list[str]:
        names = self.storage.list(join(self.root, "raw"), suffix=".parquet")
        return [n.rsplit("/", 1)[1][: -len(".parquet")] for n in names]

    # -- versions -------------------------------------------------------------------
    def version_uri(self, version: str) -> str:
        return join(self.root, "datasets", version)

    def latest(self) -> str | None:
        uri = join(self.root, "datasets", "LATEST")
        return self.storage.read_bytes(uri).decode().strip() if self.storage.exists(uri) else None

    def manifest(self, version: str) -> Manifest:
        try:
            return Manifest.from_dict(self.storage.read_json(join(self.version_uri(version), "manifest.json")))
        except StorageError as exc:
            raise StorageError(f"dataset version {version} not found under {self.root}: {exc}") from exc

    def write_version(self, batches: dict[str, bytes], kind: str = "raw", parent: str | None = None) -> Manifest:
        """Store Parquet batches (name -> bytes) as one immutable version."""
        hashes = {name: hashlib.sha256(data).hexdigest() for name, data in batches.items()}
        version = content_version(hashes, kind)
        manifest_uri = join(self.version_uri(version), "manifest.json")
        if self.storage.exists(manifest_uri):
            return self.manifest(version)  # same content, same version: nothing to write
        rows, unreadable = {}, {}
        for name, data in batches.items():
            try:
                rows[name] = pq.read_metadata(io.BytesIO(data)).num_rows
            except (pa.ArrowException, OSError, ValueError) as exc:  # pyarrow's message does not name the file
                rows[name], unreadable[name] = 0, f"{name}.parquet is not readable Parquet ({exc})"
                log.warning("batch %s: %s", name, unreadable[name])
        for name, data in batches.items():
            self.storage.write_bytes(join(self.version_uri(version), f"{name}.parquet"), data)
        if parent is None and kind == "raw":
            parent = self.latest()
        manifest = Manifest(
            version,
            dict(sorted(rows.items())),
            dict(sorted(hashes.items())),
            SCHEMA_VERSION,
            parent,
            kind,
            dict(sorted(unreadable.items())),
        )
        self.storage.write_json(manifest_uri, manifest.to_dict())  # written last: marks the version complete
        if kind == "raw":
            self.storage.write_text(join(self.root, "datasets", "LATEST"), version + "\n")
        return manifest

    def snapshot_raw(self, batches: list[str] | None = None) -> Manifest:
        """Freeze (a window of) the landing zone into a dataset version."""
        names = batches if batches is not None else self.raw_batches()
        if not names:
            raise StorageError(f"no raw batches under {join(self.root, 'raw')}: generate data first")
        return self.write_version({n: self.storage.read_bytes(self.raw_uri(n)) for n in names})

    def read_batch(self, version: str, batch: str) -> pd.DataFrame:
        return self.storage.read_parquet(join(self.version_uri(version), f"{batch}.parquet"))
