"""Scoring on the request path: the bundle's own transform and network, compiled for small batches.

``FeatureTransform.transform`` (pandas) is the one definition of the features;
it costs about 10 ms per call whatever the batch size, which is most of a
single-stop request. ``CompiledTransform`` computes the same matrices from the
request's columns with numpy and dict lookups (customer history included).
``functional_forward`` (in ``components.serving.network``) runs the network's own weights through
``torch.nn.functional`` without the per-module call overhead of ``nn.Module``
(a third of the time for one stop; the same kernels, so the same numbers).

Both are checked against the library's path (``Predictor.predict``) on probe
stops every time a model loads. If they ever disagree (a feature or a layer
was added or changed in ``components.learn.features`` or ``components.learn.model``), the
server logs why and scores through the library's path instead: correctness
never depends on this module keeping up.
"""

from __future__ import annotations

import logging
from itertools import repeat
from typing import Any, Callable

import numpy as np
import pandas as pd

from components.core.schema import AREA_TYPES, BUILDING_TYPES, TIMESTAMP
from components.learn.bundle import Predictor
from components.learn.features import HISTORY_SHRINK, UNKNOWN
from components.serving.api import PLANNING
from components.serving.network import NotCompilable, functional_forward, seconds_from

log = logging.getLogger(__name__)

FLOOR_BANDS = ("unknown", "0", "1-2", "3-5", "6+")  # the labels of components.learn.features.floor_band
_BAND_EDGES = np.array([0.0, 2.0, 5.0])
DAY_S = 86400.0


def columns_to_frame(cols: dict[str, Any]) -> pd.DataFrame:
    """Request columns as the DataFrame the library's models take (timestamps back to UTC datetimes)."""
    frame = pd.DataFrame({k: v for k, v in cols.items() if k != TIMESTAMP})
    if TIMESTAMP in cols:
        frame[TIMESTAMP] = pd.to_datetime(np.asarray(cols[TIMESTAMP], dtype=float) * 1e6, unit="us", utc=True)
    return frame


def _lookup(index: dict[str, int], values: list, default: int) -> np.ndarray:
    return np.fromiter(map(index.get, values, repeat(default)), dtype=np.int64, count=len(values))


class CompiledTransform:
    """The numpy twin of one fitted ``FeatureTransform`` (plus the history snapshot lookup)."""

    def __init__(self, predictor: Predictor):
        t = predictor.transform
        self.categorical = tuple(t.categorical)
        self.numeric = tuple(t.numeric)
        self.index = {c: {v: i + 1 for i, v in enumerate(t.vocab[c])} for c in self.categorical}
        unknown = [c for c in self.categorical if c not in _CATEGORICAL] + [n for n in self.numeric if n not in _NUMERIC]
        if unknown:
            raise NotCompilable(f"features without a compiled form: {unknown}")
        self.mean = np.asarray(t.mean, dtype=float)
        self.std = np.asarray(t.std, dtype=float)
        self.floor_fill = {str(k): float(v) for k, v in t.floor_fill.items()}
        self.prior_log_s = float(t.prior_log_s)
        # Small-integer categories go through lookup tables.
        self.weekday_table = np.array([self.index.get("weekday", {}).get(str(d), UNKNOWN) for d in range(7)])
        self.hour_table = np.array([self.index.get("hour", {}).get(str(h), UNKNOWN) for h in range(24)])
        self.band_table = np.array([self.index.get("floor_band", {}).get(b, UNKNOWN) for b in FLOOR_BANDS])
        hist = predictor.history
        keys = hist["customer_key"].astype(str).tolist()
        self.history_pos = {k: i for i, k in enumerate(keys)}
        # One extra zero row at the end: position -1 is "never seen".
        self.history_count = np.append(hist["count"].to_numpy(float), 0.0)
        self.history_sum = np.append(hist["sum_log"].to_numpy(float), 0.0)

    def __call__(self, cols: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        n = len(cols["customer_key"])
        ctx = _Context(self, cols, n)
        cats = np.empty((n, len(self.categorical)), dtype=np.int64)
        for j, name in enumerate(self.categorical):
            cats[:, j] = _CATEGORICAL[name](ctx)
        num = np.empty((n, len(self.numeric)), dtype=float)
        for j, name in enumerate(self.numeric):
            num[:, j] = _NUMERIC[name](ctx)
        num = (num - self.mean) / self.std
        num[np.isnan(num)] = 0.0  # as nan_to_num in the pandas transform (inputs are finite and bounded)
        return cats, num.astype(np.float32)


class _Context:
    """Intermediate columns, computed once per request and shared by the features that need them."""

    def __init__(self, ct: CompiledTransform, cols: dict[str, Any], n: int):
        self.ct, self.cols, self.n = ct, cols, n
        self._cache: dict[str, np.ndarray] = {}

    def get(self, key: str, make) -> np.ndarray:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def num(self, name: str) -> np.ndarray:
        return np.asarray(self.cols[name], dtype=float)

    @property
    def floor(self) -> np.ndarray:
        return self.num("floor")

    @property
    def floor_filled(self) -> np.ndarray:
        def make():
            fill = np.fromiter(map(self.ct.floor_fill.get, self.cols["building_type"], repeat(0.0)), dtype=float,
                               count=self.n)
            return np.where(np.isnan(self.floor), fill, self.floor)

        return self.get("floor_filled", make)

    @property
    def elevator(self) -> np.ndarray:
        return self.num("has_elevator")

    @property
    def elevator_filled(self) -> np.ndarray:
        return self.get("elevator_filled", lambda: np.where(np.isnan(self.elevator), 0.0, self.elevator))

    def _history_pos(self) -> np.ndarray:
        return self.get("pos", lambda: _lookup(self.ct.history_pos, self.cols["customer_key"], -1))

    @property
    def count(self) -> np.ndarray:
        return self.get("count", lambda: self.ct.history_count[self._history_pos()])

    @property
    def sum_log(self) -> np.ndarray:
        return self.get("sum", lambda: self.ct.history_sum[self._history_pos()])

    @property
    def days(self) -> np.ndarray:
        return self.get("days", lambda: np.floor(self.num(TIMESTAMP) / DAY_S))

    def category(self, name: str) -> np.ndarray:
        return _lookup(self.ct.index[name], self.cols[name], UNKNOWN)

    def floor_band_code(self) -> np.ndarray:
        """Index into FLOOR_BANDS: NaN -> unknown, <= 0, <= 2, <= 5, above."""
        f = self.floor
        return np.where(np.isnan(f), 0, np.searchsorted(_BAND_EDGES, f, side="left") + 1)


_CATEGORICAL = {
    "area_id": lambda c: c.category("area_id"),
    "area_type": lambda c: c.category("area_type"),
    "building_type": lambda c: c.category("building_type"),
    # 1970-01-01 was a Thursday (weekday 3); hours and weekdays are UTC, as in add_time_columns.
    "weekday": lambda c: c.ct.weekday_table[((c.days + 3) % 7).astype(np.int64)],
    "hour": lambda c: c.ct.hour_table[((c.num(TIMESTAMP) - c.days * DAY_S) // 3600).astype(np.int64)],
    "floor_band": lambda c: c.ct.band_table[c.floor_band_code()],
}

_NUMERIC = {
    "log_items": lambda c: np.log1p(c.num("n_items")),
    "log_boxes": lambda c: np.log1p(c.num("n_boxes")),
    "boxes": lambda c: c.num("n_boxes"),
    "log_weight": lambda c: np.log1p(c.num("weight_kg")),
    "has_frozen": lambda c: c.num("has_frozen"),
    "floor_filled": lambda c: c.floor_filled,
    "floor_missing": lambda c: np.isnan(c.floor).astype(float),
    "elevator_filled": lambda c: c.elevator_filled,
    "elevator_missing": lambda c: np.isnan(c.elevator).astype(float),
    "no_elevator_floors": lambda c: c.floor_filled * (1 - c.elevator_filled),
    "log_tenure": lambda c: np.log1p(c.num("driver_tenure_weeks")),
    "cust_prev_count_log": lambda c: np.log1p(c.count),
    "cust_prev_mean_log_s": lambda c: (c.sum_log + HISTORY_SHRINK * c.ct.prior_log_s) / (c.count + HISTORY_SHRINK),
    "cust_is_new": lambda c: (c.count == 0).astype(float),
}


def probe_columns(predictor: Predictor) -> dict[str, Any]:
    """Stops that exercise every branch of the transform: nulls, every category, unknown
    areas and customers, every weekday and hour, known customers from the snapshot."""
    known = predictor.history["customer_key"].astype(str).tolist()[:5]
    areas = list(predictor.transform.vocab.get("area_id", []))[:4] + ["A-never-seen"]
    floors = [None, 0.0, 0.5, 1.0, 2.0, 2.5, 3.0, 5.0, 5.5, 6.0, 12.0]  # every band and its edges
    elevators = [None, 0.0, 1.0]
    n = 7 * 24
    rows = []
    for i in range(n):
        rows.append({
            "route_id": f"R{i % 3}",
            "stop_index": i % 30,
            TIMESTAMP: 1_704_067_200.0 + i * 3_700.0 + (i % 7) * 86_400.0,  # 2024-01-01 onwards, all hours
            "customer_key": (known + ["never-seen-customer"])[i % (len(known) + 1)],
            "area_id": areas[i % len(areas)],
            "area_type": AREA_TYPES[i % len(AREA_TYPES)],
            "building_type": BUILDING_TYPES[(i // 3) % len(BUILDING_TYPES)],
            "floor": floors[i % len(floors)],
            "has_elevator": elevators[(i // 2) % len(elevators)],
            "n_items": 1.0 + (i * 7) % 300,
            "n_boxes": 1.0 + i % 40,
            "weight_kg": 0.1 + (i * 3.3) % 250,
            "has_frozen": float(i % 2),
            "driver_key": f"drv{i % 4}",
            "driver_tenure_weeks": float((i * 11) % 600),
        })
    numeric = ("int", "float", "bool", "timestamp")
    return {c.name: np.array([r[c.name] for r in rows], dtype=float) if c.kind in numeric else [r[c.name] for r in rows]
            for c in PLANNING}


def calibrated(predictor: Predictor, raw_s: np.ndarray, cols: dict[str, Any]) -> np.ndarray:
    """The bundle's mean correction on the network's seconds (as ``Predictor.predict``)."""
    cal = predictor.calibration
    return cal.mean(raw_s, cal.segments_of(cols))


def intervals(predictor: Predictor, mean_s: np.ndarray, cols: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The bundle's calibrated (low, high) around the mean for request columns."""
    cal = predictor.calibration
    return cal.interval(mean_s, cal.segments_of(cols))


def reference_predict(predictor: Predictor, cols: dict[str, Any]) -> np.ndarray:
    """The library's own path: a DataFrame through ``Predictor.predict``."""
    return predictor.predict(columns_to_frame(cols))


class Scorer:
    """Columns in, calibrated seconds out, for one loaded model: compiled where verified, the library's path otherwise."""

    def __init__(self, predictor: Predictor, compile: bool = True):
        self.predictor = predictor
        predictor.model.eval()  # once, here, not per request
        self.transform: CompiledTransform | None = None
        self.net: Callable = predictor.model
        self.problems: list[str] = []
        if not compile:
            return
        try:
            transform = CompiledTransform(predictor)
            problem = verify(predictor, transform)
            if problem is None:
                self.transform = transform
            else:
                self.problems.append(problem)
        except Exception as exc:  # a broken fast path must never take the model down
            self.problems.append(f"transform: {type(exc).__name__}: {exc}")
        if self.transform is not None:
            try:
                net = functional_forward(predictor.model)
                problem = verify_net(predictor, self.transform, net)
                if problem is None:
                    self.net = net
                else:
                    self.problems.append(problem)
            except Exception as exc:
                self.problems.append(f"network: {type(exc).__name__}: {exc}")
        for problem in self.problems:
            log.warning("not compiled, using the library's path instead: %s", problem)

    @property
    def path(self) -> str:
        if self.transform is None:
            return "pandas"
        return "compiled" if self.net is not self.predictor.model else "compiled-transform"

    @property
    def compile_problem(self) -> str | None:
        return "; ".join(self.problems) or None

    def __call__(self, cols: dict[str, Any]) -> np.ndarray:
        """The calibrated mean in seconds."""
        if self.transform is None:
            return reference_predict(self.predictor, cols)
        return calibrated(self.predictor, seconds_from(self.net, *self.transform(cols)), cols)

    def interval(self, cols: dict[str, Any], mean_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return intervals(self.predictor, mean_s, cols)

    def predict_interval(self, cols: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mean, low, high) in seconds: what the server answers."""
        if self.transform is None:
            return self.predictor.predict_interval(columns_to_frame(cols))
        cal = self.predictor.calibration
        return cal.apply(seconds_from(self.net, *self.transform(cols)), cal.segments_of(cols))


def verify(predictor: Predictor, compiled: CompiledTransform, cols: dict[str, Any] | None = None) -> str | None:
    """None when the compiled transform reproduces the pandas one on ``cols`` (probe stops by default)."""
    from components.learn.features import apply_snapshot

    cols = cols if cols is not None else probe_columns(predictor)
    frame = apply_snapshot(columns_to_frame(cols), predictor.history)
    want_cats, want_nums = predictor.transform.transform(frame)
    got_cats, got_nums = compiled(cols)
    if want_cats.shape != got_cats.shape or not np.array_equal(want_cats, got_cats):
        bad = sorted({compiled.categorical[j] for j in np.argwhere(want_cats != got_cats)[:, 1]}) if want_cats.shape == got_cats.shape else "shape"
        return f"compiled categorical features differ from the pandas transform: {bad}"
    if not np.allclose(want_nums, got_nums, rtol=1e-5, atol=1e-5):
        bad = sorted({compiled.numeric[j] for j in np.argwhere(~np.isclose(want_nums, got_nums, rtol=1e-5, atol=1e-5))[:, 1]})
        return f"compiled numeric features differ from the pandas transform: {bad}"
    want = predictor.predict(frame)
    got = calibrated(predictor, seconds_from(predictor.model, got_cats, got_nums), cols)
    if not np.allclose(want, got, rtol=1e-4, atol=1e-3):
        return f"predictions differ from Predictor.predict by up to {np.abs(want - got).max():.3g} s"
    return None


def verify_net(predictor: Predictor, transform: CompiledTransform, net: Callable) -> str | None:
    """None when the functional forward gives the module's own outputs on the probe stops."""
    cats, nums = transform(probe_columns(predictor))
    want = seconds_from(predictor.model, cats, nums)
    got = seconds_from(net, cats, nums)
    if not np.allclose(want, got, rtol=1e-5, atol=1e-4):
        return f"functional forward differs from the network by up to {np.abs(want - got).max():.3g} s"
    return None
