"""The model server: FastAPI, one model loaded from MLflow or a bundle, the rules as fallback.

    create_app(settings)   the app; no work at import, the model loads in the background
    app_from_env()         the same, for ``uvicorn --factory`` (settings from the environment)

Endpoints: ``POST /predict``, ``GET /healthz`` (alive), ``GET /readyz`` (200 only with a
model loaded), ``GET /metrics`` (Prometheus). With ``SERVICETIME_API_TOKEN`` set in the
environment, ``/predict`` requires ``Authorization: Bearer <token>`` (401 otherwise); the
probes, ``/metrics`` and the API docs stay open (the kubelet and Prometheus carry no token).

Every answered stop goes to the prediction log (``components.serving.predlog``), written
by a background thread; a stop may carry its ``delivery_id``, which is echoed and logged.

A composed system: when no model is loaded, or the model fails on a request, or it
returns a non-finite number for a stop, that stop is answered by the
business-logic rules (``source: "fallback"``) and counted by reason. Bad input is
the caller's problem and gets a 4xx with a message, never a 500: the body is
read and validated here (pydantic, straight from the JSON bytes) rather than by
FastAPI's parameter machinery, so every parsing failure maps to a clear status.
"""

from __future__ import annotations

import asyncio
import logging
import os
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from components.serving.api import ErrorResponse, PredictResponse
from components.serving.http import (
    HEALTHZ,
    METRICS,
    PREDICT,
    READYZ,
    ApiError,
    MetricsMiddleware,
    check_token,
    read_body,
    render_predictions,
    validation_error,
)
from components.serving.settings import ServerSettings
from components.serving.state import ServerState, settle_heap

log = logging.getLogger(__name__)

TOKEN_ENV = "SERVICETIME_API_TOKEN"
_JSON = "application/json"


def create_app(settings: ServerSettings) -> FastAPI:
    state = ServerState(settings)
    # From the environment (a Kubernetes Secret on the cluster), never from the settings JSON
    # that travels on the command line and in logs.
    token = os.environ.get(TOKEN_ENV) or None

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        import torch

        torch.set_num_threads(settings.torch_threads)
        state.start()
        if settings.startup_load_timeout_s:
            await asyncio.to_thread(state.holder.first_attempt.wait, settings.startup_load_timeout_s)
        if state.holder.current is None:
            settle_heap()  # no model yet: at least the imports are frozen
        try:
            yield
        finally:
            state.stop()

    app = FastAPI(title="servicetime model server", version="1",
                  description="Delivery service-time predictions for planned stops.", lifespan=lifespan)
    app.state.server = state
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail, "errors": exc.errors}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return await _api_error(request, validation_error(exc, settings.max_batch))

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)

    errors = {code: {"model": ErrorResponse, "description": text} for code, text in (
        (400, "the body is not JSON"), (401, "missing or invalid bearer token (when the server has one)"),
        (413, "too many stops or too large a body"), (422, "invalid stops"))}

    @app.post(PREDICT, response_model=PredictResponse, responses=errors, summary="Predict service times",
              openapi_extra={"requestBody": {"required": True, "content": {_JSON: {"schema": {
                  "$ref": "#/components/schemas/PredictRequest"}}}}})
    async def predict(request: Request) -> Response:
        check_token(request, token)
        stops = state.parse(await read_body(request, settings.body_limit))
        seconds, from_model, version, low, high, ids = state.score_with_ids(stops)
        return Response(render_predictions(seconds, from_model, version, low, high, ids), media_type=_JSON)

    @app.get(HEALTHZ, summary="Liveness: the process answers")
    async def healthz() -> dict:
        return {"status": "alive"}

    @app.get(READYZ, summary="Readiness: a model is loaded")
    async def readyz() -> JSONResponse:
        ready, body = state.readiness()
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get(METRICS, summary="Prometheus metrics", include_in_schema=False)
    async def metrics() -> Response:
        state.refresh_drift(force=True)
        state.refresh_online()
        return Response(state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            body = state.request_model.model_json_schema(ref_template="#/components/schemas/{model}")
            defs = body.pop("$defs", {})
            schema.setdefault("components", {}).setdefault("schemas", {}).update({**defs, "PredictRequest": body})
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
    return app


def app_from_env() -> FastAPI:
    """The uvicorn factory for ``servicetime serve`` (settings from SERVICETIME_SERVER_SETTINGS)."""
    from components.core.logs import configure

    configure()
    return create_app(ServerSettings.from_env())
