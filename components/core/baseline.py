"""The business-logic baseline: the rules the route planner used before any model.

About seven minutes per stop plus a few hand-made adjustments, as in Oda's
"business logic model". It has the same ``predict(frame) -> seconds`` interface
as the learned model so evaluation, the route KPI and the model server's
fallback treat both alike. The simulator uses it to fill ``planned_service_s``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

BASE_S = 420.0  # seven minutes per stop
PER_EXTRA_BOX_S = 20.0  # each box beyond the fourth
FREE_BOXES = 4
STAIRS_S = 90.0  # apartment on floor 3 or higher, no elevator
URBAN_PARKING_S = 45.0
RURAL_PARKING_S = -30.0
# The rules' own 80 % interval as ratios of their plan, for stops they answer when no model (and
# so no calibration fitted on validation weeks) is loaded; measured on the default simulated data.
FALLBACK_LOW_RATIO = 0.55
FALLBACK_HIGH_RATIO = 1.25


class BusinessLogicModel:
    """Rule-based service time, in seconds. Missing floor or elevator: assume no stairs."""

    name = "business-logic"
    version = "rules-v1"

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        boxes = pd.to_numeric(frame["n_boxes"], errors="coerce").fillna(FREE_BOXES).to_numpy(float)
        floor = pd.to_numeric(frame["floor"], errors="coerce").fillna(0).to_numpy(float)
        elevator = pd.to_numeric(frame["has_elevator"], errors="coerce").fillna(1).to_numpy(float)
        apartment = (frame["building_type"].astype(str) == "apartment").to_numpy()
        area_type = frame["area_type"].astype(str).to_numpy()
        seconds = np.full(len(frame), BASE_S)
        seconds += PER_EXTRA_BOX_S * np.clip(boxes - FREE_BOXES, 0, None)
        seconds += STAIRS_S * (apartment & (floor >= 3) & (elevator < 0.5))
        seconds += np.where(area_type == "urban", URBAN_PARKING_S, 0.0)
        seconds += np.where(area_type == "rural", RURAL_PARKING_S, 0.0)
        return seconds

    def predict_interval(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        seconds = self.predict(frame)
        return seconds, seconds * FALLBACK_LOW_RATIO, seconds * FALLBACK_HIGH_RATIO
