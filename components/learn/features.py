"""Features: one transformation for training and serving, saved with the model.

* **Customer history, point in time**: for every stop, the customer's earlier
  service times only (strictly earlier ``delivered_at``), summarised as a count
  and a shrunken mean of log-seconds. Serving looks the same numbers up in a
  snapshot published with the model; the caller never sends them.
* **Order size**: log items, boxes (linear: the network's monotone input) and log weight, frozen goods.
* **Building**: floor (imputed per building type, with a missing flag),
  elevator (imputed, with a missing flag), floors climbed without an elevator.
* **Area and time**: area id, area type, building type, weekday, hour and floor
  band as categories. Index 0 means "never seen in training"; training drops
  categories to it at random (``train.category_dropout``), so a new area gets
  a trained "some area" embedding plus its area type's.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from functools import cached_property
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from components.core.schema import FEATURES, LABEL, TIMESTAMP
from components.data.drift import REFERENCE_FILE as REFERENCE_FILE  # the training weeks' inputs, beside the features
from components.learn.running_history import RunningHistory

# The feature folder a featurize step writes and training, tuning and evaluation read: one definition.
TRAIN, VAL, TEST = "train.npz", "val.npz", "test.parquet"
# The frames themselves: baselines are fitted on the training weeks, calibration on the validation weeks.
TRAIN_FRAME, VAL_FRAME = "train.parquet", "val.parquet"
TRANSFORM_FILE = "transform.json"  # the fitted FeatureTransform
HISTORY_FILE = "customer_history.parquet"  # each customer's history as of the training data's end
SPLIT_FILE = "split.json"  # which weeks went where, and the areas seen in training

HISTORY_SHRINK = 2.0  # pseudo-visits at the global mean: one odd visit should not dominate
UNKNOWN = 0
_MEAN, _STD = "_mean", "_std"  # cached beside the code tables (not category names: those have no underscore)


FLOOR_BANDS = ("unknown", "0", "1-2", "3-5", "6+")
_BAND_EDGES = np.array([0.0, 2.0, 5.0])
DAY_S = 86400.0
EPOCH = pd.Timestamp(0, tz="UTC")

# A transform reads columns: a DataFrame's, or the model server's request columns (numbers as float
# arrays with NaN for missing, text as lists of str, delivered_at as epoch seconds). One code path.
Columns = Mapping[str, Any]


def as_float(values: Any) -> np.ndarray:
    if isinstance(values, pd.Series):
        return pd.to_numeric(values, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    return np.asarray(values, dtype=float)


def as_text(values: Any) -> list:
    if isinstance(values, pd.Series):
        return values.astype(str).tolist()
    return values if isinstance(values, list) else [str(v) for v in values]


def epoch_seconds(values: Any) -> np.ndarray:
    if isinstance(values, pd.Series):
        return (pd.to_datetime(values, utc=True) - EPOCH).dt.total_seconds().to_numpy()  # any datetime unit
    return np.asarray(values, dtype=float)


def floor_band_codes(floor: np.ndarray) -> np.ndarray:
    """Index into FLOOR_BANDS: missing -> unknown, <= 0, <= 2, <= 5, above."""
    return np.where(np.isnan(floor), 0, np.searchsorted(_BAND_EDGES, floor, side="left") + 1)


def floor_band(floor: pd.Series) -> pd.Series:
    return pd.Series(np.asarray(FLOOR_BANDS)[floor_band_codes(as_float(floor))], index=floor.index)


def _lookup(index: dict[str, int], values: list, default: int) -> np.ndarray:
    return np.fromiter(map(index.get, values, repeat(default)), dtype=np.int64, count=len(values))


def add_point_in_time_history(frame: pd.DataFrame) -> pd.DataFrame:
    """Count and sum of log service time of each customer's strictly earlier stops.

    A stop never sees its own label, nor any stop at the same or a later timestamp. Computed week by
    week, the history carried as running state (``components.learn.running_history``).
    """
    return RunningHistory().add_all(frame)


def history_snapshot(frame: pd.DataFrame) -> pd.DataFrame:
    """Per-customer history over all given stops: what the server looks up at serving time."""
    log_s = np.log(frame[LABEL].astype(float).clip(lower=1.0))
    agg = log_s.groupby(frame["customer_key"]).agg(["size", "sum"])
    return pd.DataFrame({"customer_key": agg.index.astype(str), "count": agg["size"].to_numpy(float),
                         "sum_log": agg["sum"].to_numpy(float)}).reset_index(drop=True)


@dataclass
class Arrays:
    """Encoded features and labels for one split."""

    cats: np.ndarray
    nums: np.ndarray
    y: np.ndarray

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez_compressed(buf, cats=self.cats, nums=self.nums, y=self.y)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Arrays:
        with np.load(io.BytesIO(data)) as z:
            return cls(z["cats"], z["nums"], z["y"])

    def __len__(self) -> int:
        return len(self.y)



class HistoryLookup:
    """A history snapshot as the columns a transform reads: customer -> (count, sum of log-seconds).
    A customer the snapshot never saw has count 0, so ``cust_is_new``."""

    def __init__(self, snapshot: pd.DataFrame):
        self.position = {k: i for i, k in enumerate(snapshot["customer_key"].astype(str).tolist())}
        # One zero row at the end: position -1 is "never seen".
        self.count = np.append(snapshot["count"].to_numpy(float), 0.0)
        self.sum_log = np.append(snapshot["sum_log"].to_numpy(float), 0.0)

    def columns(self, customer_keys: Any) -> dict[str, np.ndarray]:
        pos = _lookup(self.position, as_text(customer_keys), -1)
        return {"cust_prev_count": self.count[pos], "cust_prev_sum_log": self.sum_log[pos]}


class _Inputs:
    """The intermediate columns a transform needs, computed once per call and shared."""

    def __init__(self, cols: Columns, floor_fill: dict[str, float]):
        self.cols, self.floor_fill = cols, floor_fill
        self.floor = as_float(cols["floor"])
        self.elevator = as_float(cols["has_elevator"])
        self.count = as_float(cols["cust_prev_count"])
        seconds = epoch_seconds(cols[TIMESTAMP])
        self.days = np.floor(seconds / DAY_S)
        self.hour = ((seconds - self.days * DAY_S) // 3600).astype(np.int64)
        self.weekday = ((self.days + 3) % 7).astype(np.int64)  # 1970-01-01 was a Thursday (weekday 3); UTC

    def num(self, name: str) -> np.ndarray:
        return as_float(self.cols[name])

    @cached_property
    def floor_filled(self) -> np.ndarray:
        types = as_text(self.cols["building_type"])
        fill = np.fromiter(map(self.floor_fill.get, types, repeat(0.0)), dtype=float, count=len(types))
        return np.where(np.isnan(self.floor), fill, self.floor)

    @cached_property
    def elevator_filled(self) -> np.ndarray:
        return np.where(np.isnan(self.elevator), 0.0, self.elevator)


# Every numeric feature, once: training, evaluation, planning and serving all compute them here.
NUMERIC: dict[str, Callable[[_Inputs, FeatureTransform], np.ndarray]] = {
    "log_items": lambda x, t: np.log1p(x.num("n_items")),
    "log_boxes": lambda x, t: np.log1p(x.num("n_boxes")),
    "boxes": lambda x, t: x.num("n_boxes"),
    "log_weight": lambda x, t: np.log1p(x.num("weight_kg")),
    "has_frozen": lambda x, t: x.num("has_frozen"),
    "floor_filled": lambda x, t: x.floor_filled,
    "floor_missing": lambda x, t: np.isnan(x.floor).astype(float),
    "elevator_filled": lambda x, t: x.elevator_filled,
    "elevator_missing": lambda x, t: np.isnan(x.elevator).astype(float),
    "no_elevator_floors": lambda x, t: x.floor_filled * (1 - x.elevator_filled),
    "log_tenure": lambda x, t: np.log1p(x.num("driver_tenure_weeks")),
    "cust_prev_count_log": lambda x, t: np.log1p(x.count),
    "cust_prev_mean_log_s": lambda x, t: (x.num("cust_prev_sum_log") + HISTORY_SHRINK * t.prior_log_s)
    / (x.count + HISTORY_SHRINK),
    "cust_is_new": lambda x, t: (x.count == 0).astype(float),
}
# The categories computed from other columns, as small codes (their text is str(code), or FLOOR_BANDS).
DERIVED = {"weekday": (lambda x: x.weekday, [str(d) for d in range(7)]),
           "hour": (lambda x: x.hour, [str(h) for h in range(24)]),
           "floor_band": (lambda x: floor_band_codes(x.floor), list(FLOOR_BANDS))}


@dataclass
class FeatureTransform:
    """Fitted encoders and scalers. ``fit`` on training rows only; JSON round-trips."""

    vocab: dict[str, list[str]] = field(default_factory=dict)
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    floor_fill: dict[str, float] = field(default_factory=dict)
    prior_log_s: float = float(np.log(330.0))
    categorical: tuple[str, ...] = FEATURES.categorical
    numeric: tuple[str, ...] = FEATURES.numeric

    def _raw_numeric(self, x: _Inputs) -> np.ndarray:
        num = np.empty((len(x.floor), len(self.numeric)))
        for j, name in enumerate(self.numeric):
            num[:, j] = NUMERIC[name](x, self)
        return num

    def _text(self, x: _Inputs, name: str) -> list:
        if name in DERIVED:
            code, labels = DERIVED[name]
            return np.asarray(labels)[code(x)].tolist()
        return as_text(x.cols[name])

    def category_values(self, cols: Columns) -> dict[str, list]:
        """Each categorical feature's values as text, row by row (what the vocabularies are made of)."""
        x = _Inputs(cols, self.floor_fill)
        return {c: self._text(x, c) for c in self.categorical}

    def fit(self, frame: pd.DataFrame) -> FeatureTransform:
        building = frame["building_type"].astype(str)
        self.floor_fill = {b: float(v) for b, v in pd.to_numeric(frame["floor"], errors="coerce").groupby(building)
                           .median().fillna(0).items()}
        self.prior_log_s = float(np.log(frame[LABEL].astype(float).clip(lower=1.0)).mean())
        x = _Inputs(frame, self.floor_fill)
        self.vocab = {c: sorted(set(self._text(x, c))) for c in self.categorical}
        num = self._raw_numeric(x)
        self.mean = num.mean(axis=0).round(8).tolist()
        self.std = np.where(num.std(axis=0) > 1e-9, num.std(axis=0), 1.0).round(8).tolist()
        self.__dict__.pop("_codes", None)
        return self

    @property
    def _code_tables(self) -> dict[str, Any]:
        """Per category: the vocabulary index, or for a derived one a table from its code (built once)."""
        if "_codes" not in self.__dict__:
            index = {c: {v: i + 1 for i, v in enumerate(self.vocab[c])} for c in self.categorical}
            codes = {c: np.array([index[c].get(v, UNKNOWN) for v in DERIVED[c][1]]) if c in DERIVED else index[c]
                     for c in self.categorical}
            self.__dict__["_codes"] = {**codes, _MEAN: np.asarray(self.mean), _STD: np.asarray(self.std)}
        return self.__dict__["_codes"]

    def transform(self, cols: Columns) -> tuple[np.ndarray, np.ndarray]:
        """(categorical indices int64 [n, n_cat], standardised numerics float32 [n, n_num]) from a
        frame or request columns that carry the customer-history columns."""
        cats, raw = self.encode_raw(cols)
        return cats, self.standardise(raw)

    def encode_raw(self, cols: Columns) -> tuple[np.ndarray, np.ndarray]:
        """The categorical indices and the numerics before scaling (float64): what ``transform`` scales,
        and what a streamed fit computes before the scalers are known."""
        x = _Inputs(cols, self.floor_fill)
        tables = self._code_tables
        cats = np.empty((len(x.floor), len(self.categorical)), dtype=np.int64)
        for j, c in enumerate(self.categorical):
            cats[:, j] = tables[c][DERIVED[c][0](x)] if c in DERIVED else _lookup(tables[c], as_text(cols[c]), UNKNOWN)
        return cats, self._raw_numeric(x)

    def standardise(self, raw: np.ndarray) -> np.ndarray:
        tables = self._code_tables
        num = (raw - tables[_MEAN]) / tables[_STD]
        num[np.isnan(num)] = 0.0  # a missing input sits at the training mean (inputs are finite and bounded)
        return num.astype(np.float32)

    @property
    def cardinalities(self) -> list[int]:
        return [len(self.vocab[c]) + 1 for c in self.categorical]

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> FeatureTransform:
        d = json.loads(Path(path).read_text())
        d["categorical"], d["numeric"] = tuple(d["categorical"]), tuple(d["numeric"])
        return cls(**d)


def time_split(
    frame: pd.DataFrame, val_weeks: int, test_weeks: int, batch_col: str = "batch"
) -> dict[str, pd.DataFrame]:
    """Split by week, never at random: train on the past, validate and test on what follows."""
    weeks = split_weeks(frame[batch_col].unique(), val_weeks, test_weeks)
    return {split: frame[frame[batch_col].isin(names)].reset_index(drop=True) for split, names in weeks.items()}


def split_weeks(batches: Iterable[str], val_weeks: int, test_weeks: int) -> dict[str, list[str]]:
    """The batch names of train, val and test, each in order: the last ``test_weeks`` test, the
    ``val_weeks`` before them val, the rest train (batch names sort in time order)."""
    weeks = sorted(batches)
    if len(weeks) < val_weeks + test_weeks + 1:
        raise ValueError(f"need at least {val_weeks + test_weeks + 1} weeks for a time split, got {len(weeks)}")
    cut = len(weeks) - test_weeks - val_weeks
    return {"train": weeks[:cut], "val": weeks[cut : len(weeks) - test_weeks], "test": weeks[len(weeks) - test_weeks :]}


def build_features(
    clean: pd.DataFrame, val_weeks: int, test_weeks: int
) -> tuple[dict[str, pd.DataFrame], FeatureTransform, pd.DataFrame]:
    """History over all accepted rows (point in time), a time split, and a transform fit on train.

    Returns (splits, transform, history snapshot as of the end of the training weeks).
    """
    with_history = add_point_in_time_history(clean)
    splits = time_split(with_history, val_weeks, test_weeks)
    transform = FeatureTransform().fit(splits["train"])
    return splits, transform, history_snapshot(pd.concat([splits["train"], splits["val"]]))
