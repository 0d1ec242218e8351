"""Evaluation that decides: the candidate against the baselines and the champion.

Overall, per slice, per group (fairness), per window of weeks (holiday and
normal), on the route KPI and on interval coverage; the gate itself is
``components.evaluate.verdict.decide`` and the report ``components.evaluate.report``.
Thresholds come from ``EvalConfig``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Protocol

import numpy as np
import pandas as pd

from components.core.config import EvalConfig
from components.core.schema import LABEL
from components.data.simulator import is_christmas_week
from components.evaluate.baselines import BASELINES
from components.evaluate.champion import paired_bootstrap
from components.evaluate.fairness import group_metrics
from components.evaluate.importance import permutation_importance, without_history
from components.evaluate.kpi import arrival_delays, route_kpi
from components.evaluate.report import inline_images, write_report
from components.evaluate.verdict import decide
from components.learn.calibration import coverage
from components.learn.features import floor_band

__all__ = [
    "Evaluation",
    "decide",
    "evaluate",
    "inline_images",
    "permutation_importance",
    "point_metrics",
    "slice_masks",
    "write_report",
]


class Model(Protocol):
    def predict(self, frame: pd.DataFrame) -> np.ndarray: ...


def point_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    err = np.asarray(pred, float) - np.asarray(y, float)
    if len(err) == 0:
        return {"mae": float("nan"), "rmse": float("nan"), "p90_abs_error": float("nan"), "bias": float("nan"), "n": 0}
    return {
        "mae": float(np.mean(np.abs(err))),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "p90_abs_error": float(np.quantile(np.abs(err), 0.9)),
        "bias": float(np.mean(err)),
        "n": len(err),
    }


def slice_masks(frame: pd.DataFrame, train_areas: set[str]) -> dict[str, np.ndarray]:
    """The slices that matter to the business, as boolean masks over ``frame``."""
    masks: dict[str, np.ndarray] = {}
    for area_type in sorted(frame["area_type"].astype(str).unique()):
        masks[f"area_type={area_type}"] = (frame["area_type"].astype(str) == area_type).to_numpy()
    apartment = (frame["building_type"].astype(str) == "apartment").to_numpy()
    elevator = pd.to_numeric(frame["has_elevator"], errors="coerce").to_numpy()
    band = floor_band(frame["floor"]).to_numpy()
    for lift, lift_mask in (("elevator", elevator == 1), ("no elevator", elevator == 0)):
        for b in ("0", "1-2", "3-5", "6+"):
            masks[f"apartment, {lift}, floor {b}"] = apartment & lift_mask & (band == b)
    boxes = pd.to_numeric(frame["n_boxes"], errors="coerce").to_numpy()
    masks["boxes 1-2"] = boxes <= 2
    masks["boxes 3-4"] = (boxes >= 3) & (boxes <= 4)
    masks["boxes 5+"] = boxes >= 5
    new = frame["cust_prev_count"].to_numpy() == 0
    masks["new customer"] = new
    masks["returning customer"] = ~new
    masks["area unseen in training"] = ~frame["area_id"].astype(str).isin(train_areas).to_numpy()
    return masks


@dataclass
class Evaluation:
    metrics: dict[str, dict | None]
    slices: list[dict]
    route_kpi: dict[str, dict | None]
    importance: dict[str, float]
    verdict: dict
    intervals: dict = field(default_factory=dict)
    fairness: dict = field(default_factory=dict)
    champion_test: dict | None = None
    windows: dict[str, dict] = field(default_factory=dict)
    importance_history_hidden: dict[str, float] = field(default_factory=dict)
    context: dict = field(default_factory=dict)  # data window, thresholds: for the model card
    delays: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    errors_by_week: pd.DataFrame | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        return {"metrics": self.metrics, "slices": self.slices, "route_kpi": self.route_kpi,
                "importance": self.importance, "intervals": self.intervals, "fairness": self.fairness,
                "champion_test": self.champion_test, "windows": self.windows, "context": self.context,
                "importance_history_hidden": self.importance_history_hidden,
                "verdict": self.verdict}


MODELS = ("candidate", *BASELINES, "champion")


def week_window(batch: pd.Series) -> np.ndarray:
    """"holiday weeks" or "normal weeks" for each row, from the batch name's Monday."""
    def label(name: str) -> str:
        monday = date.fromisoformat(str(name).rsplit("_", 1)[-1]) if "_" in str(name) else None
        return "holiday weeks" if monday and is_christmas_week(monday) else "normal weeks"

    names = batch.astype(str)
    table = {n: label(n) for n in names.unique()}
    return names.map(table).to_numpy()


def window_report(test: pd.DataFrame, preds: dict[str, np.ndarray], window_s: float) -> dict[str, dict]:
    """Per-stop and route figures for the holiday weeks and the normal weeks of the test window, apart."""
    if "batch" not in test:
        return {}
    windows = week_window(test["batch"])
    y = test[LABEL].to_numpy(float)
    out = {}
    for name in sorted(set(windows.tolist())):
        m = windows == name
        part = test[m]
        out[name] = {"weeks": sorted(part["batch"].astype(str).unique().tolist()), "rows": int(m.sum()),
                     "metrics": {k: point_metrics(y[m], p[m]) for k, p in preds.items()},
                     "route_kpi": {k: route_kpi(part, p[m], window_s) for k, p in preds.items()}}
    return out


def _slices(test: pd.DataFrame, y: np.ndarray, preds: dict[str, np.ndarray], train_areas: set[str]) -> list[dict]:
    slices = []
    for name, mask in slice_masks(test, train_areas).items():
        if not mask.any():
            continue
        row = {"slice": name, "rows": int(mask.sum())}
        for k, p in preds.items():
            row[k] = point_metrics(y[mask], p[mask])["mae"]
        row["candidate_bias"] = float(np.mean(preds["candidate"][mask] - y[mask]))
        row["vs_baseline"] = row["candidate"] / row["baseline"] - 1
        if "champion" in preds:
            row["vs_champion"] = row["candidate"] / row["champion"] - 1
        slices.append(row)
    return slices


def _intervals(candidate: Model, test: pd.DataFrame, y: np.ndarray) -> tuple[np.ndarray | None, dict]:
    if not hasattr(candidate, "predict_interval"):
        return None, {"nominal": None, "coverage": None, "mean_width_s": None}
    mean, low, high = candidate.predict_interval(test)
    out = coverage(y, low, high, candidate.calibration.nominal)
    if "batch" in test:
        windows = week_window(test["batch"])
        out["by_window"] = {w: coverage(y[windows == w], low[windows == w], high[windows == w], out["nominal"])
                            for w in sorted(set(windows.tolist()))}
    return mean, out


def evaluate(test: pd.DataFrame, candidate: Model, baselines: dict[str, Model] | Model, champion: Model | None,
             train_areas: set[str], cfg: EvalConfig, context: dict | None = None) -> Evaluation:
    """Score every model on the test weeks and decide. ``baselines``: name -> model (or the rules alone)."""
    if not isinstance(baselines, dict):
        baselines = {"baseline": baselines}
    y = test[LABEL].to_numpy(float)
    models = {"candidate": candidate, **baselines, "champion": champion}
    preds = {k: m.predict(test) for k, m in models.items() if m is not None}
    mean, intervals = _intervals(candidate, test, y)
    if mean is not None:
        preds["candidate"] = mean
    metrics = {k: point_metrics(y, preds[k]) if k in preds else None for k in models}
    kpi = {k: route_kpi(test, preds[k], cfg.promised_window_s) if k in preds else None for k in models}
    delays = {k: arrival_delays(test, p).to_numpy() for k, p in preds.items()}
    slices = _slices(test, y, preds, train_areas)
    fairness = group_metrics(test, preds["candidate"], delays["candidate"], cfg.promised_window_s, cfg.min_group_rows)
    champion_test = None
    if "champion" in preds:
        champion_test = paired_bootstrap(
            test["route_id"],
            np.abs(preds["candidate"] - y),
            np.abs(preds["champion"] - y),
            cfg.bootstrap_samples,
            cfg.bootstrap_confidence,
        )
    importance = permutation_importance(candidate, test, cfg.importance_repeats, cfg.importance_rows)
    hidden = permutation_importance(candidate, without_history(test), cfg.importance_repeats, cfg.importance_rows)
    verdict = decide(metrics, slices, kpi, cfg, intervals, fairness, champion_test)
    week = test["batch"] if "batch" in test else pd.Series("all", index=test.index)
    by_week = pd.DataFrame({k: np.abs(p - y) for k, p in preds.items()}).groupby(week.to_numpy()).mean()
    ctx = {**(context or {}), "thresholds": cfg.model_dump()}
    return Evaluation(metrics, slices, kpi, importance, verdict, intervals, fairness, champion_test,
                      window_report(test, preds, cfg.promised_window_s), hidden, ctx, delays, by_week)
