"""Grouped permutation importance: how much the MAE grows when a group of inputs is shuffled.

Inputs that carry the same information are shuffled together. Shuffle only one
of two redundant inputs (the floor but not the building type and elevator,
the items but not the boxes) and the model reads the signal from the other, so
each looks unimportant although together they matter: redundancy splits (and
hides) importance, and a small number means "replaceable", not "unused".
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from components.core.schema import LABEL

IMPORTANCE_GROUPS = {
    "order size (items, boxes, weight)": ["n_items", "n_boxes", "weight_kg"],
    "building (type, floor, elevator)": ["building_type", "floor", "has_elevator"],
    "area (id, type)": ["area_id", "area_type"],
    "customer history": ["cust_prev_count", "cust_prev_sum_log"],
    "time of day/week": ["delivered_at"],
    "driver tenure": ["driver_tenure_weeks"],
    "frozen goods": ["has_frozen"],
}

REDUNDANCY_NOTE = (
    "Inputs that carry the same information are shuffled as one group (the building: type, floor, "
    "elevator; the customer's history). Shuffled one at a time, redundant inputs stand in for each "
    "other and each looks unimportant: redundancy splits importance between them, so a small figure "
    "means replaceable, not unused. Groups can be redundant too: a returning customer's past times "
    "already contain their building and area, so the building and area groups look small until the "
    "history is hidden (every stop scored as a new customer's, second column).")


def without_history(frame: pd.DataFrame) -> pd.DataFrame:
    """The same stops as if every customer were new: what the other inputs carry on their own."""
    return frame.assign(cust_prev_count=0.0, cust_prev_sum_log=0.0)


def permutation_importance(model, frame: pd.DataFrame, repeats: int, rows: int, seed: int = 0) -> dict[str, float]:
    """MAE increase (seconds) when a group of inputs is shuffled: what the model relies on."""
    rng = np.random.default_rng(seed)
    sample = frame.sample(min(rows, len(frame)), random_state=seed).reset_index(drop=True)
    y = sample[LABEL].to_numpy(float)
    base = np.mean(np.abs(model.predict(sample) - y))
    out = {}
    for group, cols in IMPORTANCE_GROUPS.items():
        deltas = []
        for _ in range(repeats):
            shuffled = sample.copy()
            perm = rng.permutation(len(sample))
            for c in cols:
                shuffled[c] = sample[c].to_numpy()[perm]
            deltas.append(np.mean(np.abs(model.predict(shuffled) - y)) - base)
        out[group] = float(np.mean(deltas))
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))
