"""What one model server process holds and does per request: the model holder, the rules as
fallback, scoring, and the bookkeeping after each answer (metrics, drift, prediction log).

``components.serving.app`` puts HTTP in front of it; the benchmarks drive it in-process.
"""

from __future__ import annotations

import gc
import logging
import time

import numpy as np
from pydantic import ValidationError

from components.core.baseline import BusinessLogicModel
from components.core.schema import ID, TIMESTAMP
from components.serving import metrics as mx
from components.serving.api import columns_to_frame, request_model, to_columns
from components.serving.history import HistoryFollower
from components.serving.http import ENDPOINTS, ApiError, validation_error
from components.serving.loader import LoadedModel, ModelHolder, ModelSource
from components.serving.predlog import PredictionLog, Served
from components.serving.settings import ServerSettings

log = logging.getLogger(__name__)


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
        self.history = (HistoryFollower(settings.history_uri, settings.history_every_s, on_loaded=self._on_history)
                        if settings.history_uri else None)

    # -- model lifecycle ------------------------------------------------------
    def _on_loaded(self, model: LoadedModel) -> None:
        self.metrics.set_model(model.name, model.version, model.alias or "none", model.load_seconds, model.loaded_at,
                               model.predictor.metadata.get("data_until"))
        if self.history is None or self.history.current is None:
            self.metrics.set_history(len(model.predictor.history))  # the bundle's snapshot answers
        self.refresh_drift(force=True)
        settle_heap()

    def _on_history(self, followed) -> None:
        self.metrics.set_history(followed.info.customers)
        settle_heap()  # the lookup's hundred thousand objects, out of the collector's walk as the model's are

    def start(self) -> None:
        if self.prediction_log is not None:
            self.prediction_log.start()
        if self.history is not None:
            self.history.start()
        self.holder.start()

    def stop(self) -> None:
        self.holder.stop()
        if self.history is not None:
            self.history.stop()
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
                # The followed snapshot when there is one, else the bundle's: the predictor then skips its own.
                followed = self.history.current if self.history is not None else None
                cols.update((followed.lookup if followed else model.predictor.lookup).columns(cols["customer_key"]))
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
        """Metrics, the data's age, the history's hit rate and the drift window for one answered request."""
        m = self.metrics
        data_until = model.predictor.metadata.get("data_until") if model is not None else None
        followed = self.history.current if self.history is not None else None
        if TIMESTAMP in cols and len(seconds):
            self.served_until = max(self.served_until, float(np.max(cols[TIMESTAMP])))
            if data_until:
                m.model_data_age.set(self.served_until - data_until)
            history_until = followed.info.data_until if followed else data_until
            if history_until:
                m.history_data_age.set(self.served_until - history_until)
        if "cust_prev_count" in cols:
            m.history_lookups.inc(len(seconds))
            m.history_found.inc(int(np.count_nonzero(cols["cust_prev_count"])))
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
