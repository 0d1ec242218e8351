"""Calibration fitted on the validation weeks: a mean correction and split-conformal intervals.

* **Mean correction.** Route plans add predicted service times up, so what a
  prediction must get right is the mean. A Huber-trained network lands below
  the mean of the right-skewed label; one multiplicative factor per segment
  (``sum(measured) / sum(predicted)`` on the validation weeks) removes that
  bias without touching the ranking the network learned.
* **Intervals.** Split-conformal on the ratio ``measured / corrected
  prediction``: its finite-sample quantiles on the validation weeks give a
  central interval of nominal coverage (80 % by default) that scales with the
  prediction (a long stop has a wide interval), optionally per segment.

The same object runs in evaluation and in the model server; it is plain JSON
in the bundle.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from functools import cached_property
from itertools import repeat

import numpy as np

from components.core.config import CalibrationConfig

ALL = "*"  # the global entry, used for segments too small (or unseen) to have their own


@dataclass
class Calibration:
    segment_column: str | None = None
    factor: dict[str, float] = field(default_factory=lambda: {ALL: 1.0})
    low_ratio: dict[str, float] = field(default_factory=lambda: {ALL: 1.0})
    high_ratio: dict[str, float] = field(default_factory=lambda: {ALL: 1.0})
    nominal: float = 0.8
    rows: int = 0

    @staticmethod
    def _per_stop(table: dict[str, float], segments: list) -> np.ndarray:
        default = table[ALL]
        if len(table) == 1:
            return np.full(len(segments), default)
        return np.fromiter(map(table.get, segments, repeat(default)), dtype=float, count=len(segments))

    def segments_of(self, frame) -> list | None:
        """The segment of every row of a frame (or request columns), None when global."""
        if not self.segment_column:
            return None
        values = frame[self.segment_column]
        return (
            values.astype(str).tolist() if hasattr(values, "astype") and not isinstance(values, list) else list(values)
        )

    def mean(self, raw_s: np.ndarray, segments=None) -> np.ndarray:
        """The corrected prediction (seconds) from the network's raw one."""
        return np.asarray(raw_s, float) * self._per_stop(self.factor, _seg(segments, raw_s))

    def interval(self, mean_s: np.ndarray, segments=None) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) around a corrected prediction; always low <= mean <= high."""
        mean_s = np.asarray(mean_s, float)
        seg = _seg(segments, mean_s)
        return mean_s * self._per_stop(self.low_ratio, seg), mean_s * self._per_stop(self.high_ratio, seg)

    @cached_property
    def _table(self) -> tuple[dict[str, int], np.ndarray]:
        """Segment -> row, and rows of (factor, low ratio, high ratio): built once, used per request."""
        keys = sorted(set(self.factor) | set(self.low_ratio) | set(self.high_ratio))
        rows = [[t.get(k, t[ALL]) for t in (self.factor, self.low_ratio, self.high_ratio)] for k in keys]
        return {k: i for i, k in enumerate(keys)}, np.array(rows, dtype=float)

    def apply(self, raw_s: np.ndarray, segments=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mean, low, high) from the network's raw seconds, with one segment lookup per stop."""
        raw_s = np.asarray(raw_s, float)
        seg = _seg(segments, raw_s)
        if len(self.factor) == len(self.low_ratio) == len(self.high_ratio) == 1:
            mean = raw_s * self.factor[ALL]
            return mean, mean * self.low_ratio[ALL], mean * self.high_ratio[ALL]
        code, table = self._table
        codes = np.fromiter(map(code.get, seg, repeat(code[ALL])), dtype=np.int64, count=len(seg))
        ratios = table[codes]
        mean = raw_s * ratios[:, 0]
        return mean, mean * ratios[:, 1], mean * ratios[:, 2]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Calibration:
        return cls(**d)


def _seg(segments, like: np.ndarray):
    if segments is None:
        return [ALL] * len(like)
    return list(segments)


def conformal_bounds(ratio: np.ndarray, nominal: float) -> tuple[float, float]:
    """Split-conformal central interval of the ratio: finite-sample quantiles, clipped around 1."""
    r = np.sort(np.asarray(ratio, float))
    n = len(r)
    alpha = (1 - nominal) / 2
    hi_rank = min(n, math.ceil((n + 1) * (1 - alpha)))  # 1-based order statistic
    lo_rank = max(1, math.floor((n + 1) * alpha))
    return min(float(r[lo_rank - 1]), 1.0), max(float(r[hi_rank - 1]), 1.0)


def fit_calibration(raw_s: np.ndarray, y: np.ndarray, segments, cfg: CalibrationConfig,
                    mean_correction: bool = True) -> Calibration:
    """Fit on validation-week predictions ``raw_s`` against the measured ``y``."""
    raw_s, y = np.asarray(raw_s, float), np.asarray(y, float)
    seg = np.asarray(list(segments), dtype=object) if segments is not None else np.full(len(y), ALL, dtype=object)
    use_mean = mean_correction and cfg.mean_correction != "none"
    factor = {ALL: float(y.sum() / raw_s.sum()) if use_mean else 1.0}
    groups = [g for g in sorted(set(seg.tolist())) if (seg == g).sum() >= cfg.min_segment_rows]
    if use_mean and cfg.mean_correction == "segment":
        for g in groups:
            m = seg == g
            factor[g] = float(y[m].sum() / raw_s[m].sum())
    cal = Calibration(cfg.segment_column if segments is not None else None, factor, nominal=cfg.interval_nominal,
                      rows=len(y))
    ratio = y / cal.mean(raw_s, seg.tolist())
    cal.low_ratio[ALL], cal.high_ratio[ALL] = conformal_bounds(ratio, cfg.interval_nominal)
    if cfg.interval_per_segment:
        for g in groups:
            cal.low_ratio[g], cal.high_ratio[g] = conformal_bounds(ratio[seg == g], cfg.interval_nominal)
    return cal


def coverage(y: np.ndarray, low: np.ndarray, high: np.ndarray, nominal: float) -> dict[str, float]:
    """What share of measured times fall inside their interval, and how wide the intervals are."""
    y = np.asarray(y, float)
    inside = (y >= low) & (y <= high)
    return {"nominal": float(nominal), "coverage": float(inside.mean()) if len(y) else float("nan"),
            "mean_width_s": float(np.mean(high - low)) if len(y) else float("nan"),
            "below_share": float(np.mean(y < low)) if len(y) else float("nan"),
            "above_share": float(np.mean(y > high)) if len(y) else float("nan")}
