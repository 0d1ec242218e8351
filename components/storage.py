"""One storage layer for local paths, ``file://`` URIs and ``s3://`` URIs.

S3 access is plain S3 through the ``minio`` client, so any compatible endpoint
works (MinIO, SeaweedFS, AWS). The endpoint and credentials come from the
environment (``AWS_ENDPOINT_URL`` or ``MLFLOW_S3_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``) or from ``StorageConfig``.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pandas as pd
import pyarrow.parquet as pq


class StorageError(RuntimeError):
    """A storage operation failed; the message names the URI."""


@dataclass(frozen=True)
class S3Settings:
    endpoint_url: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"


def s3_settings_from_env(endpoint_url: str | None = None, region: str = "us-east-1") -> S3Settings:
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("MLFLOW_S3_ENDPOINT_URL") or endpoint_url
    if not endpoint:
        raise StorageError("s3:// URI used but no endpoint: set AWS_ENDPOINT_URL (or storage.endpoint_url)")
    return S3Settings(
        endpoint_url=endpoint,
        access_key=os.environ.get("AWS_ACCESS_KEY_ID", ""),
        secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY", ""),
        region=os.environ.get("AWS_DEFAULT_REGION", region),
    )


@lru_cache(maxsize=8)
def _client(settings: S3Settings):
    from minio import Minio

    parsed = urlparse(settings.endpoint_url)
    return Minio(
        parsed.netloc,
        access_key=settings.access_key or None,
        secret_key=settings.secret_key or None,
        secure=parsed.scheme == "https",
        region=settings.region,
    )


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def _split_s3(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    return parsed.netloc, parsed.path.lstrip("/")


def local_path(uri: str) -> Path:
    return Path(urlparse(uri).path) if uri.startswith("file://") else Path(uri)


def join(uri: str, *parts: str) -> str:
    out = uri.rstrip("/")
    for part in parts:
        out = f"{out}/{part.strip('/')}"
    return out


class Storage:
    """Bytes, JSON and Parquet in and out of one kind of URI, with clear errors."""

    def __init__(self, settings: S3Settings | None = None):
        self._settings = settings

    def _s3(self):
        return _client(self._settings or s3_settings_from_env())

    def write_bytes(self, uri: str, data: bytes) -> None:
        if is_s3(uri):
            bucket, key = _split_s3(uri)
            client = self._s3()
            try:
                if not client.bucket_exists(bucket):
                    client.make_bucket(bucket)
                client.put_object(bucket, key, io.BytesIO(data), len(data))
            except Exception as exc:  # the minio client raises several unrelated types
                raise StorageError(f"cannot write {uri}: {exc}") from exc
            return
        path = local_path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)  # atomic: a reader never sees half a file

    def read_bytes(self, uri: str) -> bytes:
        if is_s3(uri):
            bucket, key = _split_s3(uri)
            try:
                response = self._s3().get_object(bucket, key)
                try:
                    return response.read()
                finally:
                    response.close()
                    response.release_conn()
            except Exception as exc:
                raise StorageError(f"cannot read {uri}: {exc}") from exc
        path = local_path(uri)
        if not path.exists():
            raise StorageError(f"cannot read {uri}: no such file")
        return path.read_bytes()

    def exists(self, uri: str) -> bool:
        if is_s3(uri):
            bucket, key = _split_s3(uri)
            try:
                self._s3().stat_object(bucket, key)
                return True
            except Exception:
                return False
        return local_path(uri).exists()

    def list(self, prefix_uri: str, suffix: str = "") -> list[str]:
        """Full URIs of the objects directly or recursively under a prefix, sorted."""
        if is_s3(prefix_uri):
            bucket, key = _split_s3(prefix_uri.rstrip("/") + "/")
            client = self._s3()
            try:
                if not client.bucket_exists(bucket):
                    return []
                names = [o.object_name for o in client.list_objects(bucket, prefix=key, recursive=True)]
            except Exception as exc:
                raise StorageError(f"cannot list {prefix_uri}: {exc}") from exc
            return sorted(f"s3://{bucket}/{n}" for n in names if n.endswith(suffix))
        root = local_path(prefix_uri)
        if not root.exists():
            return []
        base = prefix_uri.rstrip("/")
        return sorted(
            f"{base}/{p.relative_to(root).as_posix()}"
            for p in root.rglob("*")
            if p.is_file() and p.name.endswith(suffix) and not p.name.endswith(".tmp")
        )

    def write_json(self, uri: str, obj: Any) -> None:
        self.write_bytes(uri, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())

    def read_json(self, uri: str) -> Any:
        return json.loads(self.read_bytes(uri))

    def write_text(self, uri: str, text: str) -> None:
        self.write_bytes(uri, text.encode())

    def read_parquet(self, uri: str) -> pd.DataFrame:
        try:
            return pq.read_table(io.BytesIO(self.read_bytes(uri))).to_pandas()
        except StorageError:
            raise
        except Exception as exc:
            raise StorageError(f"cannot parse {uri} as Parquet: {exc}") from exc

    def write_parquet(self, uri: str, frame: pd.DataFrame) -> bytes:
        from components.simulator import to_parquet_bytes

        data = to_parquet_bytes(frame)
        self.write_bytes(uri, data)
        return data

    def upload_dir(self, local_dir: Path, uri: str) -> None:
        for path in sorted(Path(local_dir).rglob("*")):
            if path.is_file():
                self.write_bytes(join(uri, path.relative_to(local_dir).as_posix()), path.read_bytes())

    def download_dir(self, uri: str, local_dir: Path) -> Path:
        base = uri.rstrip("/")
        for item in self.list(base):
            target = Path(local_dir) / item[len(base) + 1 :]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(self.read_bytes(item))
        return Path(local_dir)
