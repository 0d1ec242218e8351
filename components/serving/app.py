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
import gc
import logging
import os
import time
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import ValidationError

from components.core.baseline import BusinessLogicModel
from components.core.schema import ID, TIMESTAMP
from components.serving import metrics as mx
from components.serving.api import ErrorResponse, PredictResponse, columns_to_frame, request_model, to_columns
from components.serving.http import (
    ApiError,
    MetricsMiddleware,
    check_token,
    read_body,
    render_predictions,
    validation_error,
)
from components.serving.loader import LoadedModel, ModelHolder, ModelSource
from components.serving.predlog import PredictionLog, Served
from components.serving.settings import ServerSettings

log = logging.getLogger(__name__)

PREDICT, HEALTHZ, READYZ, METRICS = "/predict", "/healthz", "/readyz", "/metrics"
ENDPOINTS = (PREDICT, HEALTHZ, READYZ, METRICS, "/docs", "/openapi.json")
TOKEN_ENV = "SERVICETIME_API_TOKEN"
_JSON = "application/json"


def settle_heap() -> None:
    """Collect once, then freeze what survives (libraries, the model) out of the collector's sight.

    The process holds a few hundred thousand long-lived objects (torch, pandas,
    mlflow); a full collection walks all of them (0.1-0.3 s on a small CPU) and
    would land on some unlucky request. Frozen, they are never walked again;
    unfreezing first lets a replaced model be collected.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class ServerState:
    """Everything the endpoints share: the model holder, metrics, drift window, fallback."""

    def __init__(self, settings: ServerSettings):
        self.settings = settings
        self.request_model = request_model(settings.max_batch)
        self.metrics = mx.ServerMetrics(ENDPOINTS)
        self.drift = mx.DriftWindow(settings.drift_window)
        self.served_until = 0.0  # the newest planned arrival among the stops served so far (epoch seconds)
        self.fallback = BusinessLogicModel()
        self.holder = ModelHolder(
            ModelSource(settings.model_uri, settings.model_path, settings.tracking_uri),
            settings.reload_interval_s, on_loaded=self._on_loaded,
            on_result=lambda ok: self.metrics.reloads.labels("ok" if ok else "error").inc())
        self._last_error_log = 0.0
        self.prediction_log: PredictionLog | None = None
        if settings.prediction_log_uri:
            self.prediction_log = PredictionLog(
                settings.prediction_log_uri, flush_rows=settings.prediction_log_flush_rows,
                flush_s=settings.prediction_log_flush_s, max_queue=settings.prediction_log_queue,
                on_written=self.metrics.log_written.inc, on_dropped=self.metrics.log_dropped.inc)
        self._online_read_at = 0.0

    # -- model lifecycle ------------------------------------------------------
    def _on_loaded(self, model: LoadedModel) -> None:
        self.metrics.set_model(model.name, model.version, model.alias or "none", model.load_seconds, model.loaded_at,
                               model.predictor.metadata.get("data_until"))
        self.refresh_drift(force=True)
        settle_heap()

    def start(self) -> None:
        if self.prediction_log is not None:
            self.prediction_log.start()
        self.holder.start()

    def stop(self) -> None:
        self.holder.stop()
        if self.prediction_log is not None:
            self.prediction_log.close()  # a clean shutdown loses no logged prediction
        self.metrics.worker_exit()

    # -- online quality (written by `servicetime monitor`) ---------------------------------
    def refresh_online(self, force: bool = False) -> None:
        uri = self.settings.online_report_uri
        now = time.monotonic()
        if not uri or (not force and now - self._online_read_at < self.settings.online_report_every_s):
            return
        self._online_read_at = now
        from components.serving.monitor import read_latest_report

        try:
            report = read_latest_report(uri)
        except Exception:  # a missing or unreadable report leaves the gauges as they were
            log.debug("no online report at %s", uri, exc_info=True)
            return
        if report is not None:
            self.metrics.set_online(report)

    def readiness(self) -> tuple[bool, dict]:
        model = self.holder.current
        if model is not None:
            return True, {"ready": True, "model": model.name, "version": model.version, "alias": model.alias or None,
                          "loaded_at": model.loaded_at}
        reason = (f"model failed to load from {self.holder.source.describe()}: {self.holder.last_error}"
                  if self.holder.last_error else f"model is loading from {self.holder.source.describe()}")
        return False, {"ready": False, "reason": reason, "fallback": "business-logic rules answer /predict"}

    # -- drift ------------------------------------------------------------------
    def refresh_drift(self, force: bool = False) -> None:
        model = self.holder.current
        now = time.monotonic()
        if model is None or (not force and now - self.drift.last_computed < self.drift.every_s):
            return
        self.drift.last_computed = now
        self.metrics.set_drift(self.drift.psi(model.predictor.reference), self.drift.filled)

    # -- scoring ----------------------------------------------------------------
    def parse(self, body: bytes) -> list:
        try:
            return self.request_model.model_validate_json(body).stops
        except ValidationError as exc:
            raise validation_error(exc, self.settings.max_batch) from None
        except Exception as exc:  # anything else while parsing is still a bad request
            raise ApiError(400, f"could not parse the request: {type(exc).__name__}") from None

    def score(self, stops: list) -> tuple[np.ndarray, np.ndarray, str | None, np.ndarray, np.ndarray]:
        """(seconds, from_model mask, model version, low, high) for validated stops."""
        return self.score_with_ids(stops)[:5]

    def score_with_ids(self, stops: list) -> tuple[np.ndarray, np.ndarray, str | None, np.ndarray, np.ndarray, list]:
        """``score`` and the stops' delivery ids (None where not sent)."""
        m = self.metrics
        started = time.perf_counter()
        cols = to_columns(stops)
        n = len(stops)
        model = self.holder.current
        seconds: np.ndarray | None = None
        reason = mx.FALLBACK_NO_MODEL
        if model is not None:
            try:
                seconds, low, high = (np.asarray(a, dtype=float) for a in model.scorer.predict_interval(cols))
                if seconds.shape != (n,) or low.shape != (n,) or high.shape != (n,):
                    raise ValueError(f"model returned shape {seconds.shape} for {n} stops")
            except Exception:
                seconds, reason = None, mx.FALLBACK_MODEL_ERROR
                self._log_error("the model failed to score a request; answered from the fallback")
        if seconds is None:
            seconds, low, high = self._fallback(model, cols)
            from_model = np.zeros(n, dtype=bool)
            m.fallback_by_reason[reason].inc(n)
        else:
            from_model = np.isfinite(seconds) & np.isfinite(low) & np.isfinite(high)
            bad = int(n - from_model.sum())
            if bad:
                rows = np.flatnonzero(~from_model)
                subset = {k: (v[rows] if isinstance(v, np.ndarray) else [v[i] for i in rows]) for k, v in cols.items()}
                seconds[rows], low[rows], high[rows] = self._fallback(model, subset)
                m.fallback_by_reason[mx.FALLBACK_NON_FINITE].inc(bad)
        # The answer is made: bookkeeping never turns it into a 500, and a failing metric or drift
        # update does not cost the prediction log its rows (each is guarded on its own).
        try:
            self._record(cols, seconds, from_model, time.perf_counter() - started, model)
        except Exception:
            self._bookkeeping_failed()
        try:
            self._log_served(cols, seconds, low, high, from_model, model)
        except Exception:
            self._bookkeeping_failed()
        return seconds, from_model, model.version if model is not None else None, low, high, cols[ID]

    def _record(self, cols: dict, seconds: np.ndarray, from_model: np.ndarray, scoring_s: float,
                model: LoadedModel | None) -> None:
        """Metrics, the model's data age and the drift window for one answered request."""
        m = self.metrics
        data_until = model.predictor.metadata.get("data_until") if model is not None else None
        if data_until and TIMESTAMP in cols and len(seconds):
            self.served_until = max(self.served_until, float(np.max(cols[TIMESTAMP])))
            m.model_data_age.set(self.served_until - data_until)
        m.inference_latency.observe(scoring_s)
        n, n_model = len(seconds), int(from_model.sum())
        if n_model:
            m.from_model.inc(n_model)
        if n_model < n:
            m.from_fallback.inc(n - n_model)
        mx.observe_many(m.predicted, seconds)
        m.batch_size.observe(n)
        self.drift.add(cols)
        self.refresh_drift()

    def _log_served(self, cols: dict, seconds: np.ndarray, low: np.ndarray, high: np.ndarray, from_model: np.ndarray,
                    model: LoadedModel | None) -> None:
        if self.prediction_log is not None:  # one queue put: the writer thread does the rest
            self.prediction_log.submit(Served(cols, seconds, low, high, from_model, model, time.time()))

    def _fallback(self, model: LoadedModel | None, cols: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The rules' plan and interval: calibrated by the loaded bundle if it has one, else the rules' defaults."""
        frame = columns_to_frame(cols)
        cal = model.predictor.rules_calibration if model is not None else None
        if cal is not None:
            try:
                seconds = self.fallback.predict(frame)
                return (seconds, *cal.interval(seconds, cal.segments_of(cols)))
            except Exception:  # the last line of defence must not fail: the rules' own interval
                self._log_error("the bundle's calibrated fallback failed; answered with the plain rules")
        return self.fallback.predict_interval(frame)

    def _bookkeeping_failed(self) -> None:
        self.metrics.monitoring_errors.inc()
        self._log_error("recording a served request failed (metrics, drift or prediction log); answered anyway")

    def _log_error(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_error_log > 10.0:  # one traceback per 10 s, not one per request
            self._last_error_log = now
            log.exception(message)


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
