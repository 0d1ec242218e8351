"""The server's HTTP edge: what comes in (the body within its limit, the bearer token, pydantic's errors
as one 4xx with a message), what goes out (the predictions' JSON, written by hand: it is the hot path),
and every request counted and timed."""

from __future__ import annotations

import hmac
import json
import time

import numpy as np
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from components.serving import metrics as mx

MAX_REPORTED_ERRORS = 20
PREDICT, HEALTHZ, READYZ, METRICS = "/predict", "/healthz", "/readyz", "/metrics"
ENDPOINTS = (PREDICT, HEALTHZ, READYZ, METRICS, "/docs", "/openapi.json")  # the request metrics' label values


class ApiError(Exception):
    """A request the server refuses: status, one-line message, optional field errors."""

    def __init__(self, status: int, detail: str, errors: list[dict] | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.detail, self.errors, self.headers = status, detail, errors or [], headers


def _loc(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) or "body"


def validation_error(exc: ValidationError | RequestValidationError, max_batch: int) -> ApiError:
    """Pydantic's errors as one status and a readable message (the input itself is not echoed)."""
    raw = exc.errors()
    errors = [{"loc": _loc(tuple(e.get("loc", ()))), "msg": e.get("msg", ""), "type": e.get("type", "")}
              for e in raw[:MAX_REPORTED_ERRORS]]
    types = {e["type"] for e in errors}
    if "json_invalid" in types or "json_type" in types:
        return ApiError(400, "request body is not valid JSON: " + errors[0]["msg"], errors)
    if any(e["type"] == "too_long" and e["loc"] in ("stops", "body.stops") for e in errors):
        return ApiError(413, f"too many stops: at most {max_batch} per request", errors)
    first = errors[0] if errors else {"loc": "body", "msg": "invalid"}
    more = f" (and {len(raw) - 1} more)" if len(raw) > 1 else ""
    return ApiError(422, f"invalid request: {first['loc']}: {first['msg']}{more}", errors)


def render_predictions(seconds: np.ndarray, from_model: np.ndarray, version: str | None,
                       low: np.ndarray, high: np.ndarray, delivery_ids: list | None = None) -> bytes:
    sources = np.where(from_model, '"model"', '"fallback"').tolist()
    # The interval to 0.1 s (plenty for a window, and shorter to write), rounded outwards and
    # clamped, so that low <= service_time_s <= high holds in the JSON too.
    mid = np.round(seconds, 3)
    lo = np.minimum(np.floor(np.asarray(low) * 10) / 10, mid).tolist()
    hi = np.maximum(np.ceil(np.asarray(high) * 10) / 10, mid).tolist()
    if delivery_ids is not None and any(d is not None for d in delivery_ids):
        # Only when the caller sent ids: the common request pays nothing for the echo.
        ids = [f',"delivery_id":{json.dumps(d)}' if d is not None else "" for d in delivery_ids]
        items = ",".join(f'{{"service_time_s":{v!r},"low_s":{a!r},"high_s":{b!r},"source":{s}{i}}}'
                         for v, a, b, s, i in zip(mid.tolist(), lo, hi, sources, ids, strict=True))
    else:
        items = ",".join(f'{{"service_time_s":{v!r},"low_s":{a!r},"high_s":{b!r},"source":{s}}}'
                         for v, a, b, s in zip(mid.tolist(), lo, hi, sources, strict=True))
    return f'{{"predictions":[{items}],"model_version":{json.dumps(version)}}}'.encode()


def check_token(request: Request, token: str | None) -> None:
    """401 unless the request carries ``Authorization: Bearer <token>`` (no token set: open)."""
    if not token:
        return
    given = request.headers.get("authorization", "")
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
        raise ApiError(401, "missing or invalid bearer token: send Authorization: Bearer <token>",
                       headers={"WWW-Authenticate": 'Bearer realm="servicetime"'})


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body too large: {declared} bytes, at most {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"request body too large: more than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class MetricsMiddleware:
    """Counts every HTTP request by endpoint and status and times it (plain ASGI: cheap)."""

    def __init__(self, app, metrics: mx.ServerMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.observe_request(scope.get("path", ""), status, time.perf_counter() - started)
