"""Pipeline steps: one module per step, each a function of config, URIs and local paths.

The KFP components in ``pipelines/`` are thin wrappers around these; the CLI
and the simulation loop call them directly. Each step records a small JSON
summary under the run's URI so the exit handler can assemble the run summary.

Steps that KFP retries run inside ``guarded``: it checks the services first (a
dead S3 or MLflow fails the attempt in seconds, naming it), and when an attempt
fails for a reason a retry cannot change (an unreadable file, a schema error, a
full disk) it leaves a marker so the retried attempts stop at once with the same
message instead of doing the work again.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

from components.core.storage import (
    ServiceUnavailable,
    Storage,
    StorageError,
    disk_full,
    is_s3,
    join,
    s3_reachable,
)
from components.steps.outcomes import StepOutcome

log = logging.getLogger(__name__)
Outcome = TypeVar("Outcome", bound=StepOutcome)


class NotRetried(RuntimeError):
    """An earlier attempt of this step failed deterministically; this attempt stops at once."""


class Rejected(RuntimeError):
    """A step's outcome that a retry cannot change (a rejected batch, a failed canary): the steps' own
    failures derive from it, so this module need not import them."""


def record(run_uri: str | None, outcome: Outcome) -> Outcome:
    """Write a step's outcome to ``<run_uri>/steps/<step>.json`` (if a run URI is given); return it."""
    if run_uri:
        Storage().write_json(join(run_uri, "steps", f"{outcome.STEP}.json"), outcome.record())
    return outcome


def s3_endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("MLFLOW_S3_ENDPOINT_URL")


def check_services(mlflow_uri: str | None = None, uris: tuple[str | None, ...] = ()) -> None:
    """Raise ``ServiceUnavailable`` naming the first service that does not answer: S3 (when any URI
    is ``s3://`` or an S3 endpoint is configured), then an MLflow server (an http(s) tracking URI)."""
    from components.learn import tracking

    endpoint = s3_endpoint()
    if endpoint and (any(u and is_s3(u) for u in uris) or mlflow_uri and mlflow_uri.startswith("http")):
        why = s3_reachable(endpoint)
        if why:
            raise ServiceUnavailable(f"S3 is not reachable at {endpoint}: {why}")
    elif any(u and is_s3(u) for u in uris):
        raise ServiceUnavailable("S3 is used (an s3:// URI) but no endpoint is set: AWS_ENDPOINT_URL")
    if mlflow_uri:
        tracking.preflight(mlflow_uri)


def deterministic(exc: BaseException) -> bool:
    """True for failures a retry cannot change: bad input, a rejected batch, a full disk."""
    from pydantic import ValidationError

    if isinstance(exc, (ServiceUnavailable, NotRetried)):
        return isinstance(exc, NotRetried)
    if disk_full(exc):
        return True
    if isinstance(exc, (Rejected, ValidationError, FileNotFoundError, IsADirectoryError,
                        PermissionError, KeyError, TypeError, ValueError)):
        return True
    if isinstance(exc, StorageError):
        text = str(exc)
        return "cannot parse" in text or "no such file" in text or "not readable" in text
    return False


def _marker(run_uri: str, step: str) -> str:
    return join(run_uri, "steps", f"{step}.fatal.json")


@contextmanager
def guarded(step: str, run_uri: str | None, mlflow_uri: str | None = None,
            uris: tuple[str | None, ...] = ()) -> Iterator[None]:
    """Run a retried step: services checked first; a deterministic failure is not worth a retry."""
    check_services(mlflow_uri, (run_uri, *uris))
    storage = Storage()
    if run_uri and storage.exists(_marker(run_uri, step)):
        raise NotRetried(f"{step}: not retried, the first attempt failed for good: "
                         f"{storage.read_json(_marker(run_uri, step))['error']}")
    try:
        yield
    except Exception as exc:
        if run_uri and deterministic(exc):
            try:
                storage.write_json(_marker(run_uri, step), {"error": f"{type(exc).__name__}: {exc}"})
            except StorageError as write_error:  # a full disk cannot take the marker either
                log.warning("could not record that %s should not be retried: %s", step, write_error)
        raise
