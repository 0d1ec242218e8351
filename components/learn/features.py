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

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from components.core.schema import FEATURES, LABEL, TIMESTAMP
from components.data.drift import REFERENCE_FILE as REFERENCE_FILE  # the training weeks' inputs, beside the features

# The feature folder a featurize step writes and training, tuning and evaluation read: one definition.
TRAIN, VAL, TEST = "train.npz", "val.npz", "test.parquet"
# The frames themselves: baselines are fitted on the training weeks, calibration on the validation weeks.
TRAIN_FRAME, VAL_FRAME = "train.parquet", "val.parquet"
TRANSFORM_FILE = "transform.json"  # the fitted FeatureTransform
HISTORY_FILE = "customer_history.parquet"  # each customer's history as of the training data's end
SPLIT_FILE = "split.json"  # which weeks went where, and the areas seen in training

HISTORY_SHRINK = 2.0  # pseudo-visits at the global mean: one odd visit should not dominate
UNKNOWN = 0


def floor_band(floor: pd.Series) -> pd.Series:
    f = pd.to_numeric(floor, errors="coerce")
    band = np.select([f.isna(), f <= 0, f <= 2, f <= 5], ["unknown", "0", "1-2", "3-5"], default="6+")
    return pd.Series(band, index=floor.index)


def add_time_columns(frame: pd.DataFrame) -> pd.DataFrame:
    ts = pd.to_datetime(frame[TIMESTAMP], utc=True)
    return frame.assign(weekday=ts.dt.weekday.astype(str), hour=ts.dt.hour.astype(str), floor_band=floor_band(frame["floor"]))


def add_point_in_time_history(frame: pd.DataFrame) -> pd.DataFrame:
    """Count and sum of log service time of each customer's strictly earlier stops.

    Rows are processed in time order; a stop never sees its own label, nor any
    stop at the same or a later timestamp.
    """
    order = frame.sort_values([TIMESTAMP, "delivery_id"], kind="stable").index
    f = frame.loc[order]
    log_s = np.log(f[LABEL].astype(float).clip(lower=1.0))
    key = f["customer_key"]
    ts = f[TIMESTAMP]
    grp = log_s.groupby(key)
    count_incl = grp.cumcount() + 1
    sum_incl = grp.cumsum()
    # Exclude every stop of the same customer at the same timestamp (ties), not just this one.
    tie = pd.DataFrame({"k": key, "t": ts, "s": log_s})
    tie_rank = tie.groupby(["k", "t"]).cumcount() + 1
    tie_sum_upto = tie.groupby(["k", "t"])["s"].cumsum()
    prev_count = count_incl - tie_rank
    prev_sum = sum_incl - tie_sum_upto
    out = frame.copy()
    out.loc[order, "cust_prev_count"] = prev_count.to_numpy(float)
    out.loc[order, "cust_prev_sum_log"] = prev_sum.to_numpy(float)
    return out


def history_snapshot(frame: pd.DataFrame) -> pd.DataFrame:
    """Per-customer history over all given stops: what the server looks up at serving time."""
    log_s = np.log(frame[LABEL].astype(float).clip(lower=1.0))
    agg = log_s.groupby(frame["customer_key"]).agg(["size", "sum"])
    return pd.DataFrame({"customer_key": agg.index.astype(str), "count": agg["size"].to_numpy(float),
                         "sum_log": agg["sum"].to_numpy(float)}).reset_index(drop=True)


def apply_snapshot(frame: pd.DataFrame, snapshot: pd.DataFrame) -> pd.DataFrame:
    looked_up = frame[["customer_key"]].astype({"customer_key": str}).merge(
        snapshot, on="customer_key", how="left", validate="many_to_one"
    )
    return frame.assign(
        cust_prev_count=looked_up["count"].fillna(0).to_numpy(float),
        cust_prev_sum_log=looked_up["sum_log"].fillna(0).to_numpy(float),
    )


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

    # -- building the raw numeric matrix -----------------------------------------
    def _numeric_frame(self, f: pd.DataFrame) -> pd.DataFrame:
        floor = pd.to_numeric(f["floor"], errors="coerce")
        fill = f["building_type"].astype(str).map(self.floor_fill).fillna(0.0)
        floor_filled = floor.fillna(fill)
        elevator = pd.to_numeric(f["has_elevator"], errors="coerce")
        elevator_filled = elevator.fillna(0.0)
        count = f["cust_prev_count"].astype(float)
        mean_log = (f["cust_prev_sum_log"].astype(float) + HISTORY_SHRINK * self.prior_log_s) / (count + HISTORY_SHRINK)
        return pd.DataFrame({
            "log_items": np.log1p(pd.to_numeric(f["n_items"], errors="coerce").astype(float)),
            "log_boxes": np.log1p(pd.to_numeric(f["n_boxes"], errors="coerce").astype(float)),
            "boxes": pd.to_numeric(f["n_boxes"], errors="coerce").astype(float),
            "log_weight": np.log1p(pd.to_numeric(f["weight_kg"], errors="coerce").astype(float)),
            "has_frozen": pd.to_numeric(f["has_frozen"], errors="coerce").astype(float),
            "floor_filled": floor_filled,
            "floor_missing": floor.isna().astype(float),
            "elevator_filled": elevator_filled,
            "elevator_missing": elevator.isna().astype(float),
            "no_elevator_floors": floor_filled * (1 - elevator_filled),
            "log_tenure": np.log1p(pd.to_numeric(f["driver_tenure_weeks"], errors="coerce").astype(float)),
            "cust_prev_count_log": np.log1p(count),
            "cust_prev_mean_log_s": mean_log,
            "cust_is_new": (count == 0).astype(float),
        })[list(self.numeric)]

    def fit(self, frame: pd.DataFrame) -> FeatureTransform:
        f = add_time_columns(frame)
        self.vocab = {c: sorted(f[c].astype(str).unique().tolist()) for c in self.categorical}
        self.floor_fill = {b: float(v) for b, v in pd.to_numeric(f["floor"], errors="coerce").groupby(f["building_type"].astype(str)).median().fillna(0).items()}
        self.prior_log_s = float(np.log(f[LABEL].astype(float).clip(lower=1.0)).mean())
        num = self._numeric_frame(f).to_numpy(float)
        self.mean = num.mean(axis=0).round(8).tolist()
        self.std = np.where(num.std(axis=0) > 1e-9, num.std(axis=0), 1.0).round(8).tolist()
        return self

    def transform(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(categorical indices int64 [n, n_cat], standardised numerics float32 [n, n_num])."""
        f = add_time_columns(frame)
        cats = np.zeros((len(f), len(self.categorical)), dtype=np.int64)
        for j, c in enumerate(self.categorical):
            index = {v: i + 1 for i, v in enumerate(self.vocab[c])}
            cats[:, j] = f[c].astype(str).map(index).fillna(UNKNOWN).to_numpy(np.int64)
        num = (self._numeric_frame(f).to_numpy(float) - np.asarray(self.mean)) / np.asarray(self.std)
        return cats, np.nan_to_num(num, nan=0.0).astype(np.float32)

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


def time_split(frame: pd.DataFrame, val_weeks: int, test_weeks: int, batch_col: str = "batch") -> dict[str, pd.DataFrame]:
    """Split by week, never at random: train on the past, validate and test on what follows."""
    weeks = sorted(frame[batch_col].unique())
    if len(weeks) < val_weeks + test_weeks + 1:
        raise ValueError(f"need at least {val_weeks + test_weeks + 1} weeks for a time split, got {len(weeks)}")
    test = set(weeks[-test_weeks:])
    val = set(weeks[-(test_weeks + val_weeks) : -test_weeks])
    return {
        "train": frame[~frame[batch_col].isin(test | val)].reset_index(drop=True),
        "val": frame[frame[batch_col].isin(val)].reset_index(drop=True),
        "test": frame[frame[batch_col].isin(test)].reset_index(drop=True),
    }


def build_features(clean: pd.DataFrame, val_weeks: int, test_weeks: int) -> tuple[dict[str, pd.DataFrame], FeatureTransform, pd.DataFrame]:
    """History over all accepted rows (point in time), a time split, and a transform fit on train.

    Returns (splits, transform, history snapshot as of the end of the training weeks).
    """
    with_history = add_point_in_time_history(clean)
    splits = time_split(with_history, val_weeks, test_weeks)
    transform = FeatureTransform().fit(splits["train"])
    return splits, transform, history_snapshot(pd.concat([splits["train"], splits["val"]]))
