"""One storage layer for local paths, ``file://`` URIs and ``s3://`` URIs.

S3 access is plain S3 through the ``minio`` client, so any compatible endpoint
works (MinIO, SeaweedFS, AWS). The endpoint and credentials come from the
environment (``AWS_ENDPOINT_URL`` or ``MLFLOW_S3_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``) or from ``StorageConfig``.
"""

from __future__ import annotations

import errno
import io
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


class StorageError(RuntimeError):
    """A storage operation failed; the message names the URI."""


class ServiceUnavailable(RuntimeError):
    """A service a run needs (S3, MLflow) does not answer; the message names the service and its URL."""


# An S3 outage must fail a call within seconds, not the minio client's 5-minute default timeouts.
S3_CONNECT_TIMEOUT_S = 5.0
S3_READ_TIMEOUT_S = 60.0
S3_RETRIES = 2  # on top of the first attempt, with a short backoff


def disk_full(exc: BaseException) -> bool:
    """The error (or one it came from) is ENOSPC/EDQUOT: retrying the same write cannot help."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


@dataclass(frozen=True)
class S3Settings:
    endpoint_url: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"


def s3_client_env(endpoint_url: str, access_key: str, secret_key: str, region: str = "us-east-1") -> dict[str, str]:
    """The environment S3 clients read (boto3, pyarrow, MLflow's artifact store, ``s3_settings_from_env``)."""
    return {"AWS_ENDPOINT_URL": endpoint_url, "MLFLOW_S3_ENDPOINT_URL": endpoint_url, "AWS_ACCESS_KEY_ID": access_key,
            "AWS_SECRET_ACCESS_KEY": secret_key, "AWS_DEFAULT_REGION": region}


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
    import urllib3
    from minio import Minio

    parsed = urlparse(settings.endpoint_url)
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=S3_CONNECT_TIMEOUT_S, read=S3_READ_TIMEOUT_S),
        retries=urllib3.Retry(total=S3_RETRIES, backoff_factor=0.5, status_forcelist=[500, 502, 503, 504]),
        maxsize=10,
    )
    return Minio(
        parsed.netloc,
        access_key=settings.access_key or None,
        secret_key=settings.secret_key or None,
        secure=parsed.scheme == "https",
        region=settings.region,
        http_client=http,
    )


def s3_reachable(endpoint_url: str, timeout_s: float = 3.0) -> str | None:
    """None when the S3 endpoint answers HTTP at all (any status), else why not: the pre-flight check."""
    import httpx

    try:
        httpx.get(endpoint_url, timeout=timeout_s)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def write_atomic(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write through a temporary file in the same folder and rename it over ``path``.

    The temporary name is unique (two writers never share it), and it is removed when
    the write fails (a full disk leaves no half file and no ``.tmp``). ``mode`` sets the
    permissions before any byte is written (0o600 for a file holding a secret).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode if mode is not None else 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def file_lock(path: str | Path, blocking: bool = True) -> Iterator[bool]:
    """An exclusive ``flock`` on ``path`` for the block; yields False when ``blocking`` is off and
    another process holds it. The kernel drops it when the holder dies (a killed run never leaves it)."""
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


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
        try:
            write_atomic(local_path(uri), data)  # a reader never sees half a file
        except OSError as exc:
            raise StorageError(f"cannot write {uri}: {exc.strerror or exc}") from exc

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
            from minio.error import S3Error

            try:
                self._s3().stat_object(bucket, key)
                return True
            except S3Error as exc:
                if exc.code in ("NoSuchKey", "NoSuchBucket", "NoSuchObject", "ResourceNotFound"):
                    return False
                raise StorageError(f"cannot check {uri}: {exc}") from exc
            except Exception as exc:  # an unreachable endpoint is not "absent"
                raise StorageError(f"cannot check {uri}: {exc}") from exc
        return local_path(uri).exists()

    def _object(self, uri: str, what: str, s3_call, local_call):
        """One call on one object, S3 or local, with its failure as a StorageError naming the URI."""
        try:
            if is_s3(uri):
                return s3_call(self._s3(), *_split_s3(uri))
            return local_call(local_path(uri))
        except OSError as exc:
            raise StorageError(f"cannot {what} {uri}: {exc.strerror or exc}") from exc
        except Exception as exc:  # the minio client raises several unrelated types
            raise StorageError(f"cannot {what} {uri}: {exc}") from exc

    def modified(self, uri: str) -> float:
        """When the object was last written (unix seconds)."""
        return self._object(uri, "check", lambda c, b, k: c.stat_object(b, k).last_modified.timestamp(),
                            lambda p: p.stat().st_mtime)

    def delete(self, uri: str) -> None:
        self._object(uri, "delete", lambda c, b, k: c.remove_object(b, k), lambda p: p.unlink(missing_ok=True))

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

    def delete_prefix(self, prefix_uri: str) -> int:
        """Remove every object under a prefix (a folder, locally); returns how many files went."""
        if is_s3(prefix_uri):
            items = self.list(prefix_uri)
            client = self._s3()
            for item in items:
                bucket, key = _split_s3(item)
                try:
                    client.remove_object(bucket, key)
                except Exception as exc:
                    raise StorageError(f"cannot delete {item}: {exc}") from exc
            return len(items)
        import shutil

        root = local_path(prefix_uri)
        count = sum(1 for p in root.rglob("*") if p.is_file()) if root.is_dir() else 0
        shutil.rmtree(root, ignore_errors=True)
        return count

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
        data = to_parquet_bytes(frame)
        self.write_bytes(uri, data)
        return data


def to_parquet_bytes(frame: pd.DataFrame) -> bytes:
    """Deterministic Parquet: same frame, same bytes (no timestamps in metadata)."""
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), sink, compression="zstd")
    return sink.getvalue()


class ParquetAppender:
    """A local Parquet file written one frame at a time, each frame a row group, every frame cast to
    the first one's schema (so a week whose column is all null still fits). Nothing is written
    without a frame; ``close`` then writes ``empty_like``'s columns, or nothing when it is None."""

    def __init__(self, path: str | Path):
        self.path, self.writer, self.rows = Path(path), None, 0
        self.path.unlink(missing_ok=True)  # an earlier attempt's file must not outlive this one

    def write(self, frame: pd.DataFrame) -> None:
        table = pa.Table.from_pandas(frame, schema=self.writer.schema if self.writer else None, preserve_index=False)
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, table.schema)
        self.writer.write_table(table)
        self.rows += len(frame)

    def close(self, empty_like: pd.DataFrame | None = None) -> None:
        if self.writer is not None:
            self.writer.close()
        elif empty_like is not None:
            empty_like.iloc[:0].to_parquet(self.path, index=False)
