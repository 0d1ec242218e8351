"""The customer history as running state, carried from one weekly batch to the next.

Per customer: the count and the sum of log service time of every stop seen so far. A new week's
stops get their point-in-time history from that state plus the week's own earlier stops, then join
it, so a year costs one pass over its weeks instead of a sort and group-by over the whole year (which
grew faster than the data), and the continual loop adds a week without recomputing the year.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from components.core.schema import ID, LABEL, TIMESTAMP

KEY = "customer_key"
COUNT, SUM_LOG = "cust_prev_count", "cust_prev_sum_log"


def _log_seconds(frame: pd.DataFrame) -> pd.Series:
    return np.log(frame[LABEL].astype(float).clip(lower=1.0))


class RunningHistory:
    """Stops seen so far, by customer; ``add`` one week at a time, in time order."""

    def __init__(self) -> None:
        self._position: dict[str, int] = {}  # customer_key -> row of the arrays below
        self._count = np.zeros(0)
        self._sum_log = np.zeros(0)
        self.until: pd.Timestamp | None = None  # the newest stop seen

    def _rows(self, keys: np.ndarray) -> np.ndarray:
        """Each key's row in the state, new customers appended (plain dict and arrays: a pandas index
        aligned every week would cost more than the history itself)."""
        position = self._position
        rows = np.fromiter((position.setdefault(k, len(position)) for k in keys), dtype=np.int64, count=len(keys))
        grow = len(position) - len(self._count)
        if grow:
            self._count = np.concatenate([self._count, np.zeros(grow)])
            self._sum_log = np.concatenate([self._sum_log, np.zeros(grow)])
        return rows

    def history(self, week: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Each stop's (count, sum of log-seconds) of history, in ``week``'s row order: the customer's stops of
        earlier weeks and the week's own strictly earlier ones (a stop at the same time as another is not its
        past). The week's stops then join the state. A week must start after the newest stop seen
        (``ValueError`` otherwise)."""
        times = pd.to_datetime(week[TIMESTAMP], utc=True)
        if self.until is not None and len(week) and times.min() <= self.until:
            raise ValueError(f"a week starting {times.min()} does not follow the history, which runs to {self.until}")
        f = week[[TIMESTAMP, ID, KEY, LABEL]].reset_index(drop=True)
        order = f.sort_values([TIMESTAMP, ID], kind="stable").index.to_numpy()
        f = f.take(order)
        log_s = _log_seconds(f).to_numpy(float)
        rows = self._rows(f[KEY].astype(str).to_numpy(object))
        ns = times.to_numpy("datetime64[ns]").view(np.int64)[order]
        by = pd.Series(log_s).groupby(rows, sort=False)
        # Within the week: earlier stops, without every stop of the same customer at the same time (ties).
        ties = pd.Series(log_s).groupby([rows, ns], sort=False)
        count, total = np.empty(len(f)), np.empty(len(f))
        count[order] = (by.cumcount() - ties.cumcount()).to_numpy(float) + self._count[rows]
        total[order] = (by.cumsum() - ties.cumsum()).to_numpy(float) + self._sum_log[rows]
        size = len(self._count)
        self._count += np.bincount(rows, minlength=size)
        self._sum_log += np.bincount(rows, weights=np.nan_to_num(log_s, nan=0.0), minlength=size)  # as sum() skips NaN
        if len(week):
            self.until = times.max()
        return count, total

    def add(self, week: pd.DataFrame) -> pd.DataFrame:
        """``week`` with the history columns (``history``), its stops then part of the state."""
        count, total = self.history(week)
        return week.assign(**{COUNT: count, SUM_LOG: total})

    def add_all(self, frame: pd.DataFrame, batch_col: str = "batch") -> pd.DataFrame:
        """Every batch of ``frame`` in time order (row order kept). Batches that overlap in time (a late
        file, or no batch column) are taken as one, which gives the same history."""
        if batch_col not in frame.columns or frame.empty:
            return self.add(frame)
        times = pd.to_datetime(frame[TIMESTAMP], utc=True)
        spans = times.groupby(frame[batch_col].to_numpy(), sort=False).agg(["min", "max"]).sort_values("min")
        if (spans["min"].iloc[1:].to_numpy() <= spans["max"].iloc[:-1].to_numpy()).any():
            return self.add(frame)
        positions = frame.groupby(batch_col, sort=False).indices  # batch -> row positions
        columns = frame[[TIMESTAMP, ID, KEY, LABEL]]
        count, total = np.empty(len(frame)), np.empty(len(frame))
        for name in spans.index:
            at = positions[name]
            count[at], total[at] = self.history(columns.iloc[at])
        return frame.assign(**{COUNT: count, SUM_LOG: total})

    def snapshot(self) -> pd.DataFrame:
        """The state as the history snapshot the server looks up (``features.history_snapshot``'s columns)."""
        return pd.DataFrame({"customer_key": list(self._position), "count": self._count.copy(),
                             "sum_log": self._sum_log.copy()})
