"""The model bundle: network weights, feature transform, history snapshot and drift reference, together.

Serving, evaluation and the registry all load this one directory, so the
transformation used at training time is the one used at serving time.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from components.core.config import CalibrationConfig
from components.data.drift import Reference
from components.learn.calibration import Calibration
from components.learn.features import (
    HISTORY_FILE,
    REFERENCE_FILE,
    TRANSFORM_FILE,
    Columns,
    FeatureTransform,
    HistoryLookup,
    history_snapshot,
)
from components.learn.model import NetConfig, ServiceTimeNet, predict_seconds, seconds_from

WEIGHTS = "model.pt"
NET = "net.json"
TRANSFORM = TRANSFORM_FILE
HISTORY = HISTORY_FILE
REFERENCE = REFERENCE_FILE
METADATA = "metadata.json"
CALIBRATION = "calibration.json"  # {"model": Calibration, "rules": Calibration}, fitted on the validation weeks
REQUEST_ROWS = 65536  # up to this many stops score in one batch, without autograd bookkeeping


def save_bundle(out_dir: str | Path, state_dict: dict, net: NetConfig, transform: FeatureTransform,
                history: pd.DataFrame, reference: Reference, metadata: dict,
                calibration: dict[str, Calibration] | None = None) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(state_dict, out / WEIGHTS)
    (out / NET).write_text(json.dumps(net.to_dict(), indent=1))
    transform.save(out / TRANSFORM)
    history.to_parquet(out / HISTORY, index=False)
    (out / REFERENCE).write_text(json.dumps(reference.to_dict(), indent=1))
    (out / METADATA).write_text(json.dumps(metadata, indent=1, sort_keys=True, default=str))
    if calibration:
        (out / CALIBRATION).write_text(json.dumps({k: c.to_dict() for k, c in calibration.items()}, indent=1))
    return out


def find_bundle(path: str | Path) -> Path:
    """The bundle directory inside a downloaded MLflow model or a plain bundle path."""
    root = Path(path)
    for candidate in (root, root / "artifacts" / "bundle", root / "bundle"):
        if (candidate / WEIGHTS).exists():
            return candidate
    matches = sorted(root.rglob(WEIGHTS))
    if not matches:
        raise FileNotFoundError(f"no model bundle ({WEIGHTS}) under {root}")
    return matches[0].parent


@dataclass
class Predictor:
    """A loaded bundle: frame in, seconds out. Same interface as ``BusinessLogicModel``."""

    model: ServiceTimeNet
    transform: FeatureTransform
    history: pd.DataFrame
    reference: Reference
    metadata: dict
    load_seconds: float = 0.0
    name: str = "model"
    calibration: Calibration = field(default_factory=Calibration)  # identity: a bundle without one
    rules_calibration: Calibration | None = None  # intervals for stops the rules answer

    @property
    def version(self) -> str:
        return str(self.metadata.get("model_version") or self.metadata.get("run_id") or "unregistered")

    @classmethod
    def load(cls, path: str | Path) -> Predictor:
        started = time.perf_counter()
        d = find_bundle(path)
        net = NetConfig.from_dict(json.loads((d / NET).read_text()))
        model = ServiceTimeNet(net)
        model.load_state_dict(torch.load(d / WEIGHTS, weights_only=True))
        model.eval()
        history = pd.read_parquet(d / HISTORY)
        cal = json.loads((d / CALIBRATION).read_text()) if (d / CALIBRATION).exists() else {}
        return cls(model, FeatureTransform.load(d / TRANSFORM), history,
                   Reference.from_dict(json.loads((d / REFERENCE).read_text())),
                   json.loads((d / METADATA).read_text()), time.perf_counter() - started,
                   calibration=Calibration.from_dict(cal["model"]) if "model" in cal else Calibration(),
                   rules_calibration=Calibration.from_dict(cal["rules"]) if "rules" in cal else None)

    @cached_property
    def lookup(self) -> HistoryLookup:
        return HistoryLookup(self.history)

    def raw_predict(self, cols: Columns) -> np.ndarray:
        """The network's own output in seconds, before calibration, for a frame or request columns;
        customer history comes from the bundle's snapshot unless the columns carry point-in-time history."""
        if "cust_prev_count" not in cols:
            cols = _with(cols, self.lookup.columns(cols["customer_key"]))
        cats, nums = self.transform.transform(cols)
        if len(cats) <= REQUEST_ROWS:
            return seconds_from(self.model, cats, nums)
        return predict_seconds(self.model, cats, nums).numpy().astype(float)

    def predict(self, cols: Columns) -> np.ndarray:
        """Service time in seconds: the calibrated mean (what a route plan adds up)."""
        return self.calibration.mean(self.raw_predict(cols), self.calibration.segments_of(cols))

    def predict_interval(self, cols: Columns) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mean, low, high) in seconds: the central interval of nominal coverage around the mean."""
        return self.calibration.apply(self.raw_predict(cols), self.calibration.segments_of(cols))


def _with(cols: Columns, extra: dict[str, np.ndarray]) -> Columns:
    if isinstance(cols, pd.DataFrame):
        return cols.assign(**extra)
    return {**cols, **extra}


def calibrate_bundle(bundle_dir: str | Path, val: pd.DataFrame, cfg: CalibrationConfig) -> dict[str, Calibration]:
    """Fit the model's (and the fallback rules') calibration on the validation weeks; write it into the bundle."""
    from components.core.baseline import BusinessLogicModel
    from components.core.schema import LABEL
    from components.learn.calibration import fit_calibration

    predictor = Predictor.load(bundle_dir)
    y = val[LABEL].to_numpy(float)
    segments = val[cfg.segment_column].astype(str).tolist()
    calibration = {"model": fit_calibration(predictor.raw_predict(val), y, segments, cfg),
                   "rules": fit_calibration(BusinessLogicModel().predict(val), y, segments, cfg, mean_correction=False)}
    (find_bundle(bundle_dir) / CALIBRATION).write_text(
        json.dumps({k: c.to_dict() for k, c in calibration.items()}, indent=1)
    )
    return calibration


__all__ = ["Predictor", "calibrate_bundle", "find_bundle", "history_snapshot", "save_bundle"]
