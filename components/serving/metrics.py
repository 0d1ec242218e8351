"""The model server's Prometheus metrics, named in ``metric_names`` and nowhere else.

One ``ServerMetrics`` per app, on its own registry (so several apps can live in
one process, as in tests and benchmarks). With several uvicorn workers the
server runs prometheus-client's multiprocess mode: ``servicetime serve
--workers N`` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh folder before the
workers start, every worker writes its samples there, and ``/metrics`` (on
whichever worker answers) aggregates all of them: counters and histograms are
summed, the model gauges keep the most recent live value, ``model_loaded`` the
minimum (any worker without a model shows 0), drift PSI the maximum over the
workers' windows.

Labels stay low-cardinality: endpoint is one of the app's routes (or
``other``), status the HTTP code, reason and source small fixed sets, feature
the schema's ``DRIFT_FEATURES``, and ``model_info`` has one live series per
loaded model.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as mp

from components.core.schema import DRIFT_FEATURES
from components.data.drift import Reference, psi
from components.serving import metric_names as m

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SERVICE_TIME_BUCKETS = (30, 60, 120, 180, 240, 300, 360, 420, 480, 600, 750, 900, 1200, 1800, 2700, 3600)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)

FALLBACK_NO_MODEL = "no_model"  # no model loaded (yet, or it failed to load)
FALLBACK_MODEL_ERROR = "model_error"  # the model raised while scoring this request
FALLBACK_NON_FINITE = "non_finite"  # the model returned NaN or infinity for a stop
FALLBACK_REASONS = (FALLBACK_NO_MODEL, FALLBACK_MODEL_ERROR, FALLBACK_NON_FINITE)


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def observe_many(histogram: Histogram, values: np.ndarray) -> None:
    """``observe`` for a whole array at once: one bucket count per bucket, not one call per value."""
    values = np.asarray(values, dtype=float)
    if len(values) <= 4:  # numpy costs more than it saves on a handful of values
        for v in values.tolist():
            histogram.observe(v)
        return
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None:  # a future prometheus-client: plain path
        for v in values.tolist():
            histogram.observe(v)
        return
    counts = np.bincount(np.searchsorted(np.asarray(bounds, dtype=float), values, side="left"),
                         minlength=len(bounds))
    total.inc(float(values.sum()))
    for i in np.flatnonzero(counts[: len(bounds)]).tolist():
        buckets[i].inc(int(counts[i]))


class DriftWindow:
    """The last ``size`` scored stops' drift features, and their PSI against the training reference.

    Stops go into a ring buffer (cheap, on the request path); PSI is recomputed at
    most every ``every_s`` seconds, and on every scrape.
    """

    def __init__(self, size: int, features: tuple[str, ...] = DRIFT_FEATURES, every_s: float = 1.0):
        self.size = max(int(size), 1)
        self.features = features
        self.every_s = every_s
        self.values = np.full((self.size, len(features)), np.nan)
        self.filled = 0
        self.cursor = 0
        self.last_computed = 0.0
        self.lock = threading.Lock()

    def add(self, cols: dict[str, Any]) -> None:
        n = min(len(cols[self.features[0]]), self.size)
        with self.lock:
            end = self.cursor + n
            first = min(n, self.size - self.cursor)  # rows before the ring wraps
            for j, f in enumerate(self.features):
                column = cols[f][-n:]
                self.values[self.cursor : self.cursor + first, j] = column[:first]
                if first < n:
                    self.values[: n - first, j] = column[first:]
            self.cursor = end % self.size
            self.filled = min(self.filled + n, self.size)

    def clear(self) -> None:
        with self.lock:
            self.values[:] = np.nan
            self.filled = self.cursor = 0

    def psi(self, reference: Reference) -> dict[str, float]:
        with self.lock:
            window = self.values[: self.filled].copy()
        return {f: psi(reference.features[f], window[:, j]) for j, f in enumerate(self.features)
                if f in reference.features}


class ServerMetrics:
    def __init__(self, endpoints: tuple[str, ...]):
        self.multiprocess = multiprocess_dir() is not None
        self.endpoints = frozenset(endpoints)
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(m.REQUESTS, "HTTP requests by endpoint and status code.",
                                [m.LABEL_ENDPOINT, m.LABEL_STATUS], registry=r)
        self.predictions = Counter(m.PREDICTIONS, "Stops scored, by the learned model or the fallback rules.",
                                   [m.LABEL_SOURCE], registry=r)
        self.fallbacks = Counter(m.FALLBACKS, "Stops answered by the business-logic fallback, by reason.",
                                 [m.LABEL_REASON], registry=r)
        self.reloads = Counter(m.MODEL_RELOADS, "Model loads and reloads, by result.", [m.LABEL_RESULT], registry=r)
        self.request_latency = Histogram(m.REQUEST_LATENCY, "Request latency in seconds, by endpoint.",
                                         [m.LABEL_ENDPOINT], buckets=LATENCY_BUCKETS, registry=r)
        self.inference_latency = Histogram(m.INFERENCE_LATENCY, "Time spent scoring one request's stops, seconds.",
                                           buckets=LATENCY_BUCKETS, registry=r)
        self.predicted = Histogram(m.PREDICTED_SERVICE_TIME, "Predicted service time per stop, seconds.",
                                   buckets=SERVICE_TIME_BUCKETS, registry=r)
        self.batch_size = Histogram(m.BATCH_SIZE, "Stops per /predict request.", buckets=BATCH_BUCKETS, registry=r)
        recent = "livemostrecent"
        self.model_info = Gauge(m.MODEL_INFO, "The served model: 1 for the loaded one.",
                                ["name", "version", "alias"], registry=r, multiprocess_mode=recent)
        self.model_loaded = Gauge(m.MODEL_LOADED, "1 when a model is loaded, 0 while answering from the fallback.",
                                  registry=r, multiprocess_mode="livemin")
        self.model_load_seconds = Gauge(m.MODEL_LOAD_SECONDS, "Seconds the last model load took (download included).",
                                        registry=r, multiprocess_mode=recent)
        self.model_loaded_timestamp = Gauge(m.MODEL_LOADED_TIMESTAMP, "Unix time the served model was loaded.",
                                            registry=r, multiprocess_mode=recent)
        self.model_data_until = Gauge(m.MODEL_DATA_TIMESTAMP, "Unix time of the newest stop the served model "
                                      "learned from (0: its lineage does not say).", registry=r,
                                      multiprocess_mode=recent)
        self.model_data_age = Gauge(m.MODEL_DATA_AGE, "Seconds from the served model's newest training stop to the "
                                    "newest stop served (its planned arrival).", registry=r,
                                    multiprocess_mode="livemax")
        self.history_customers = Gauge(m.HISTORY_CUSTOMERS, "Customers in the followed history snapshot.",
                                       registry=r, multiprocess_mode=recent)
        self.history_data_age = Gauge(m.HISTORY_DATA_AGE, "Seconds from the history snapshot's newest stop to the "
                                      "newest stop served.", registry=r, multiprocess_mode="livemax")
        self.history_lookups = Counter(m.HISTORY_LOOKUPS, "Stops scored with a customer-history lookup.",
                                       registry=r)
        self.history_found = Counter(m.HISTORY_FOUND, "Stops whose customer had history in the snapshot.",
                                     registry=r)
        self.drift_psi = Gauge(m.INPUT_DRIFT_PSI, "PSI of recent request inputs against the training reference.",
                               [m.LABEL_FEATURE], registry=r, multiprocess_mode="livemax")
        self.drift_rows = Gauge(m.DRIFT_WINDOW_ROWS, "Stops in the drift window.", registry=r,
                                multiprocess_mode="livesum")
        self.log_written = Counter(m.PREDICTION_LOG_ROWS, "Served predictions written to the prediction log.",
                                   registry=r)
        self.log_dropped = Counter(m.PREDICTION_LOG_DROPPED,
                                   "Served predictions dropped before the log (writer queue full).", registry=r)
        self.monitoring_errors = Counter(
            m.MONITORING_ERRORS, "Requests whose drift, metric or prediction-log bookkeeping failed (answered anyway).",
            registry=r)
        online = {"registry": r, "multiprocess_mode": recent}
        self.online = {
            key: Gauge(name, text, [m.LABEL_SLICE], **online) for key, name, text in (
                ("mae", m.ONLINE_MAE, "Online MAE of served predictions against arrived labels, seconds."),
                ("bias", m.ONLINE_BIAS, "Online bias (prediction - actual) of served predictions, seconds."),
                ("late_share", m.ONLINE_LATE_SHARE, "Share of joined stops reached after the promised window."),
                ("coverage", m.ONLINE_COVERAGE, "Share of arrived labels inside the served interval."),
                ("rows", m.ONLINE_ROWS, "Served predictions joined with a label."),
            )}
        self.online_nominal = Gauge(m.ONLINE_NOMINAL_COVERAGE, "Nominal coverage of the served intervals.", **online)
        self.online_report_ts = Gauge(m.ONLINE_REPORT_TIMESTAMP, "Unix time of the latest online report.", **online)
        for reason in FALLBACK_REASONS:  # exported at 0 from the start, so rate() works
            self.fallbacks.labels(reason)
        for source in ("model", "fallback"):
            self.predictions.labels(source)
        for result in ("ok", "error"):
            self.reloads.labels(result)
        self.model_loaded.set(0)
        self._info_labels: tuple[str, str, str] | None = None
        # Children resolved once: .labels() takes a lock and builds a key on every call.
        self.from_model = self.predictions.labels("model")
        self.from_fallback = self.predictions.labels("fallback")
        self.fallback_by_reason = {reason: self.fallbacks.labels(reason) for reason in FALLBACK_REASONS}
        self._request_children: dict[tuple[str, int], tuple[Any, Any]] = {}

    def endpoint(self, path: str) -> str:
        return path if path in self.endpoints else "other"

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        key = (path, status)
        children = self._request_children.get(key)
        if children is None:
            endpoint = self.endpoint(path)
            children = (self.requests.labels(endpoint, str(status)), self.request_latency.labels(endpoint))
            if len(self._request_children) < 1000:  # bounded even under a path-scanning client
                self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def set_model(self, name: str, version: str, alias: str, load_seconds: float, loaded_at: float,
                  data_until: float | None = None) -> None:
        labels = (name, version, alias)
        if self._info_labels and self._info_labels != labels:
            if self.multiprocess:  # a multiprocess sample cannot be removed: mark it old
                self.model_info.labels(*self._info_labels).set(0)
            else:
                self.model_info.remove(*self._info_labels)
        self.model_info.labels(*labels).set(1)
        self._info_labels = labels
        self.model_loaded.set(1)
        self.model_load_seconds.set(load_seconds)
        self.model_loaded_timestamp.set(loaded_at)
        self.model_data_until.set(data_until or 0.0)

    def set_history(self, customers: int) -> None:
        self.history_customers.set(customers)

    def set_drift(self, values: dict[str, float], rows: int) -> None:
        for feature, value in values.items():
            self.drift_psi.labels(feature).set(value)
        self.drift_rows.set(rows)

    def set_online(self, report: dict) -> None:
        """The latest online report's figures (``components.serving.monitor.online_report``), one series per slice."""
        for row in report.get("slices", []):
            for key, gauge in self.online.items():
                value = row.get(key)
                if value is not None:
                    gauge.labels(row["slice"]).set(float(value))
        if report.get("interval_nominal") is not None:
            self.online_nominal.set(float(report["interval_nominal"]))
        if report.get("created_at") is not None:
            self.online_report_ts.set(float(report["created_at"]))

    def exposition(self) -> bytes:
        if self.multiprocess:
            registry = CollectorRegistry()
            mp.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)

    @staticmethod
    def worker_exit() -> None:
        """Drop this worker's live gauges (multiprocess mode only)."""
        if multiprocess_dir():
            mp.mark_process_dead(os.getpid())

