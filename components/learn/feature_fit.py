"""The transform's fit, one week at a time: ``FeatureTransform.fit`` on the whole training frame, streamed.

Two passes, because the numeric scalers need the floor imputation and the label prior first:
``observe`` every training week (floors per building type, the label prior, the categories), then
``scalers`` fed each week's unscaled numerics (``FeatureTransform.encode_raw``) and ``finish``.
Memory is the state (distinct floors per building type, the category sets, a few sums), not the weeks.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import pandas as pd

from components.core.schema import LABEL
from components.learn.features import FeatureTransform


def median_of_counts(counts: Counter) -> float:
    """The median of the values counted (as pandas: the mean of the two middle values), NaN when empty."""
    total = sum(counts.values())
    if not total:
        return float("nan")
    low, high = (total - 1) // 2, total // 2  # 0-based positions of the middle value(s)
    seen, found = 0, []
    for value in sorted(counts):
        seen += counts[value]
        while len(found) < 2 and seen > (low, high)[len(found)]:
            found.append(value)
        if len(found) == 2:
            break
    return (found[0] + found[1]) / 2


class TransformFitter:
    """Builds the transform ``FeatureTransform().fit(all weeks)`` gives, from the weeks one by one."""

    def __init__(self) -> None:
        self._floors: dict[str, Counter] = {}  # building type -> floor -> stops
        self._log_sum, self._log_n = 0.0, 0
        self._texts: dict[str, set[str]] = defaultdict(set)
        self._n = 0  # numeric moments, merged week by week (Chan et al.): rows, mean, sum of squared deviations
        self._mean: np.ndarray | None = None
        self._m2: np.ndarray | None = None
        self.transform = FeatureTransform()

    def observe(self, week: pd.DataFrame) -> None:
        """Pass 1: the floors, the label prior and the category values of a training week."""
        building = week["building_type"].astype(str)
        floor = pd.to_numeric(week["floor"], errors="coerce")
        for b in building.unique():  # a type seen only without a floor still gets its fill (0)
            self._floors.setdefault(b, Counter())
        for (b, f), n in floor.groupby(building).value_counts().items():
            self._floors[b][float(f)] += int(n)
        log_s = np.log(week[LABEL].astype(float).clip(lower=1.0))
        self._log_sum += float(log_s.sum())
        self._log_n += int(log_s.notna().sum())
        for c, values in self.transform.category_values(week).items():
            self._texts[c].update(values)

    def scalers(self) -> FeatureTransform:
        """End of pass 1: the transform with its imputation, prior and vocabularies (not yet its scalers),
        ready for ``encode_raw``."""
        t = self.transform
        t.floor_fill = {b: (0.0 if np.isnan(m := median_of_counts(self._floors[b])) else float(m))
                        for b in sorted(self._floors)}
        t.prior_log_s = float(self._log_sum / self._log_n) if self._log_n else float("nan")
        t.vocab = {c: sorted(self._texts[c]) for c in t.categorical}
        t.__dict__.pop("_codes", None)
        return t

    def add_numeric(self, raw: np.ndarray) -> None:
        """Pass 2: a training week's unscaled numerics (rows x features)."""
        n = len(raw)
        if not n:
            return
        mean = raw.mean(axis=0)
        m2 = ((raw - mean) ** 2).sum(axis=0)
        if self._mean is None:
            self._n, self._mean, self._m2 = n, mean, m2
            return
        total = self._n + n
        delta = mean - self._mean
        self._mean = self._mean + delta * (n / total)
        self._m2 = self._m2 + m2 + delta**2 * (self._n * n / total)
        self._n = total

    def finish(self) -> FeatureTransform:
        """The fitted transform, its scalers from pass 2 (rounded as ``fit`` rounds them)."""
        if self._mean is None:
            raise ValueError("no training rows to fit the transform on")
        t = self.transform
        std = np.sqrt(self._m2 / self._n)
        t.mean = self._mean.round(8).tolist()
        t.std = np.where(std > 1e-9, std, 1.0).round(8).tolist()
        t.__dict__.pop("_codes", None)
        return t
