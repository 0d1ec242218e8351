"""The prediction log: every served prediction, appended in batches to day-partitioned Parquet.

Layout under a root URI (``<workspace>/predictions`` locally, ``s3://<bucket>/predictions``
on the cluster, both through ``components.core.storage.Storage``)::

    <root>/day=YYYY-MM-DD/part-<unix ms>-<pid>-<seq>.parquet

The request path only puts one tuple per request on a bounded queue (the arrays
it has already computed; no copy, no formatting). A background thread turns
them into rows, looks up whether the customer's history and the area were
known to the model, and writes a file when ``flush_rows`` rows are waiting or
``flush_s`` seconds have passed. ``close()`` (the app's lifespan shutdown)
drains the queue and writes what is left, so a clean shutdown loses nothing.
A full queue (the writer far behind, e.g. storage down) drops that request's
rows rather than stall the answer; drops are counted and logged.
"""

from __future__ import annotations

import datetime as dt
import io
import itertools
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from components.core.schema import ID
from components.core.storage import Storage, join

log = logging.getLogger(__name__)

DAY_PREFIX = "day="
TICK_S = 0.25  # how often the writer drains the queue (at most flush_s)
# The log's columns, in order: the one list the writer and the readers (components.serving.monitor) share.
LOG_SCHEMA = pa.schema([
    ("delivery_id", pa.string()),
    ("route_id", pa.string()),
    ("stop_index", pa.int64()),
    ("model_name", pa.string()),
    ("model_version", pa.string()),
    ("service_time_s", pa.float64()),
    ("low_s", pa.float64()),
    ("high_s", pa.float64()),
    ("source", pa.string()),  # model | fallback
    ("history_found", pa.bool_()),  # the customer had history in the snapshot the answer used
    ("area_known", pa.bool_()),  # the area was in the model's training vocabulary
    ("predicted_at", pa.timestamp("ms", tz="UTC")),
])


@dataclass(frozen=True)
class Served:
    """One request's answer as the request path hands it over (references, not copies)."""

    cols: dict[str, Any]
    seconds: np.ndarray
    low: np.ndarray
    high: np.ndarray
    from_model: np.ndarray
    model: Any  # the LoadedModel that answered (None: no model, all fallback)
    at: float  # unix seconds


class _Known:
    """Per model: the customers in its history snapshot and the areas in its vocabulary, as sets
    built once (Arrow's is_in would rebuild its hash table of the snapshot on every call)."""

    def __init__(self) -> None:
        self._model: Any = None
        self.customers: frozenset[str] = frozenset()
        self.areas: frozenset[str] = frozenset()

    def of(self, model: Any) -> _Known:
        if model is not self._model:
            self._model = model
            predictor = model.predictor
            self.customers = frozenset(predictor.history["customer_key"].astype(str))
            self.areas = frozenset(str(a) for a in predictor.transform.vocab.get("area_id", []))
        return self


def _strings(values) -> pa.Array:
    return pa.array(values, pa.string())


def to_table(items: list[Served], known: _Known) -> pa.Table:
    """Requests' answers as one Arrow table in ``LOG_SCHEMA``: columns gathered over all the
    requests first, then one Arrow call per column (per-request Arrow calls cost more than a
    single-stop request itself)."""
    sizes = [len(it.seconds) for it in items]
    n = sum(sizes)

    def chain(column: str) -> list:
        return list(itertools.chain.from_iterable(it.cols[column] for it in items))

    ids = list(itertools.chain.from_iterable(it.cols.get(ID) or [None] * size for it, size in zip(items, sizes)))
    found, area, names, versions = [], [], [], []
    for it, size in zip(items, sizes, strict=True):
        if it.model is not None:
            k = known.of(it.model)
            counts = it.cols.get("cust_prev_count")  # the history the answer used (followed or the bundle's)
            found.append(np.asarray(counts, dtype=float) > 0 if counts is not None
                         else np.fromiter(map(k.customers.__contains__, it.cols["customer_key"]), bool, size))
            area.append(np.fromiter(map(k.areas.__contains__, it.cols["area_id"]), bool, size))
            names.append(it.model.name)
            versions.append(it.model.version)
        else:
            found.append(np.zeros(size, dtype=bool))
            area.append(np.zeros(size, dtype=bool))
            names.append(None)
            versions.append(None)
    per_item = np.repeat(np.arange(len(items)), sizes)

    def each(values: list) -> pa.Array:  # one value per request, repeated over its stops
        return pa.array(values, pa.string()).take(pa.array(per_item))

    def numbers(attr: str) -> pa.Array:
        return pa.array(np.concatenate([np.asarray(getattr(it, attr), dtype=float) for it in items]))

    at_ms = np.repeat(np.array([int(it.at * 1000) for it in items], dtype=np.int64), sizes)
    from_model = np.concatenate([np.asarray(it.from_model, dtype=bool) for it in items])
    arrays = [
        _strings(ids),
        _strings(chain("route_id")),
        pa.array(np.concatenate([np.asarray(it.cols["stop_index"], dtype=float) for it in items]).astype(np.int64)),
        each(names),
        each(versions),
        numbers("seconds"),
        numbers("low"),
        numbers("high"),
        pc.if_else(pa.array(from_model), "model", "fallback"),
        pa.array(np.concatenate(found)),
        pa.array(np.concatenate(area)),
        pa.array(at_ms).cast(pa.timestamp("ms", tz="UTC")),
    ]
    assert all(len(a) == n for a in arrays)
    return pa.Table.from_arrays(arrays, schema=LOG_SCHEMA)


def day_of(unix_s: float) -> str:
    return dt.datetime.fromtimestamp(unix_s, dt.UTC).strftime("%Y-%m-%d")


class PredictionLog:
    """The background writer: ``submit`` on the request path, ``close`` at shutdown."""

    def __init__(self, root_uri: str, storage: Storage | None = None, flush_rows: int = 20_000,
                 flush_s: float = 5.0, max_queue: int = 10_000,
                 on_written: Callable[[int], None] | None = None, on_dropped: Callable[[int], None] | None = None):
        self.root = root_uri.rstrip("/")
        self.storage = storage or Storage()
        self.flush_rows, self.flush_s = flush_rows, flush_s
        self.queue: queue.Queue[Served | None] = queue.Queue(maxsize=max_queue)
        self.on_written, self.on_dropped = on_written, on_dropped
        self.written_rows = self.dropped_rows = self.failed_flushes = 0
        self._known = _Known()
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()  # set only by close()
        self._last_drop_log = 0.0

    # -- the request path -----------------------------------------------------
    def submit(self, served: Served) -> None:
        try:
            self.queue.put_nowait(served)
        except queue.Full:
            n = len(served.seconds)
            self.dropped_rows += n
            if self.on_dropped:
                self.on_dropped(n)
            now = time.monotonic()
            if now - self._last_drop_log > 10.0:
                self._last_drop_log = now
                log.warning("prediction log queue full: %d rows dropped so far", self.dropped_rows)

    # -- the writer thread ------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._wake.clear()  # a log closed before may start again
            self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        # The writer wakes on a timer and drains what queued up meanwhile; it is never woken per
        # request, since waking a thread on every put hands the GIL back and forth on the request path.
        tick = min(TICK_S, self.flush_s)
        pending: list[Served] = []
        rows = 0
        last_flush = time.monotonic()
        while True:
            self._wake.wait(tick)
            closing = False
            while True:
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:  # close(): everything queued before it is in pending now
                    closing = True
                    break
                pending.append(item)
                rows += len(item.seconds)
                if rows >= self.flush_rows:  # files of about flush_rows, however much queued up
                    self._flush(pending)
                    pending, rows = [], 0
            if closing:
                self._flush(pending)
                return
            if rows >= self.flush_rows or (pending and time.monotonic() - last_flush >= self.flush_s):
                self._flush(pending)
                pending, rows = [], 0
            if not pending:
                last_flush = time.monotonic()

    def _flush(self, items: list[Served]) -> None:
        if not items:
            return
        try:
            table = to_table(items, self._known)
            for day, part in self._by_day(table):
                self.storage.write_bytes(self._file_uri(day), _parquet_bytes(part))
            self.written_rows += table.num_rows
            if self.on_written:
                self.on_written(table.num_rows)
        except Exception:  # storage down: these rows are lost, the server keeps answering
            self.failed_flushes += 1
            log.exception("could not write %d requests to the prediction log at %s", len(items), self.root)

    @staticmethod
    def _by_day(table: pa.Table):
        ms = table.column("predicted_at").cast(pa.int64()).to_numpy()
        day_index = ms // 86_400_000  # UTC days since the epoch
        for d in np.unique(day_index).tolist():
            yield day_of(d * 86_400), table.filter(pa.array(day_index == d))

    def _file_uri(self, day: str) -> str:
        name = f"part-{int(time.time() * 1000)}-{os.getpid()}-{next(self._seq):06d}.parquet"
        return join(self.root, f"{DAY_PREFIX}{day}", name)

    def close(self, timeout: float = 30.0) -> None:
        """Drain and write everything submitted so far (blocks until done or ``timeout``)."""
        if self._thread is None:
            return
        self.queue.put(None)  # blocking: behind every submitted item
        self._wake.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("the prediction log did not finish writing within %.0f s", timeout)
        self._thread = None


def _parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def log_files(root_uri: str, storage: Storage | None = None, days: tuple[str, ...] | None = None) -> list[str]:
    """The log's Parquet files, optionally only those of some days."""
    files = (storage or Storage()).list(root_uri, suffix=".parquet")
    if days is None:
        return files
    wanted = {f"{DAY_PREFIX}{d}" for d in days}
    return [f for f in files if any(f"/{w}/" in f for w in wanted)]


def read_log(root_uri: str, storage: Storage | None = None, days: tuple[str, ...] | None = None):
    """The whole log (or some days) as one DataFrame in ``LOG_SCHEMA``."""
    storage = storage or Storage()
    tables = [pq.read_table(io.BytesIO(storage.read_bytes(f))) for f in log_files(root_uri, storage, days)]
    table = pa.concat_tables(tables) if tables else LOG_SCHEMA.empty_table()
    return table.to_pandas()
