"""Why to retrain: the schedule, input drift, and the champion's online figures.

A model whose overall MAE stays flat can still be failing a slice: urban parking
gets harder every week, so the urban stops' bias grows while the overall error
hardly moves, and new areas open that the model has never seen. The online
figures are the monitor's (``components.serving.monitor.figures``) on the rows
the model server would have logged for the champion's last served weeks, joined
with those weeks' labels. The overall MAE is compared with the champion's
evaluation; an area type's bias with the champion's own first full window of
served weeks: growth since it started serving. (Against the evaluation's few
test weeks, whose route and day shocks move a slice's bias by 10-25 s on small
data, the slice trigger fired on noise in the first served week.)
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from components.core.config import Config
from components.core.schema import ID
from components.learn import tracking
from components.learn.bundle import Predictor
from components.serving import metric_names as names
from components.serving.monitor import NEW_AREA, figures, join_labels

AREA_TYPE_SLICE = "area_type="


@dataclass(frozen=True)
class Evaluated:
    """What the champion's evaluation measured on its held-out weeks."""

    mae: float | None


@dataclass(frozen=True)
class Online:
    """The champion's online figures over its last served weeks."""

    rows: int
    mae: float | None
    slice_bias: dict[str, float]  # area-type slices with enough rows -> bias (s)
    unseen_area_share: float  # stops in areas outside the model's vocabulary


def evaluated(run_id: str | None) -> Evaluated:
    """The champion's evaluation figures, as its evaluate step logged them to MLflow."""
    if not run_id:
        return Evaluated(None)
    from mlflow import MlflowClient

    return Evaluated(MlflowClient().get_run(run_id).data.metrics.get(tracking.test_metric("candidate", "mae")))


def served_rows(predictor: Predictor, frame: pd.DataFrame) -> pd.DataFrame:
    """The prediction-log rows (``components.serving.predlog.LOG_SCHEMA``) the model server would have
    written answering these stops: the same model, intervals and history and area flags."""
    mean, low, high = predictor.predict_interval(frame)
    areas = {str(a) for a in predictor.transform.vocab.get("area_id", [])}
    return pd.DataFrame({
        "delivery_id": frame[ID].astype(str).to_numpy(),
        "route_id": frame["route_id"].astype(str).to_numpy(),
        "stop_index": frame["stop_index"].to_numpy(),
        "model_name": predictor.name,
        "model_version": predictor.version,
        "service_time_s": mean,
        "low_s": low,
        "high_s": high,
        "source": "model",
        # The loop scores with history up to each stop (the servers' refreshed snapshot), not the bundle's.
        "history_found": (frame["cust_prev_count"].to_numpy(float) > 0 if "cust_prev_count" in frame
                          else frame["customer_key"].isin(set(predictor.history["customer_key"])).to_numpy()),
        "area_known": frame["area_id"].astype(str).isin(areas).to_numpy(),
        "predicted_at": pd.to_datetime(frame["delivered_at"], utc=True),  # orders the log; the answer came before
    })


def online(cfg: Config, served: pd.DataFrame, labels: pd.DataFrame) -> Online:
    """The monitor's figures on the served rows joined with their labels."""
    joined = join_labels(served, labels.drop_duplicates(ID, keep="last"))
    rows = figures(joined, cfg.eval.promised_window_s, cfg.monitor.min_slice_rows)
    by_slice = {r["slice"]: r for r in rows}
    total = by_slice[names.SLICE_ALL]["rows"]
    unseen = by_slice.get(NEW_AREA, {"rows": 0})["rows"] / total if total else 0.0
    bias = {s: r["bias"] for s, r in by_slice.items() if s.startswith(AREA_TYPE_SLICE) and r["bias"] is not None}
    return Online(total, by_slice[names.SLICE_ALL]["mae"], bias, round(float(unseen), 4))


def retrain_triggers(cfg: Config, weeks_since_train: int, max_psi: float, evaluation: Evaluated | None,
                     now: Online | None, started: Online | None = None) -> list[str]:
    """Every reason to retrain now, in order: schedule, input drift, error growth, an area type's bias
    growth since ``started`` (the champion's first full window; None: not judged yet), unseen areas.
    Empty: keep the champion."""
    if evaluation is None or now is None:
        return ["no champion yet"]
    r = cfg.retrain
    out = []
    if weeks_since_train >= r.every_weeks:
        out.append(f"schedule ({weeks_since_train} weeks since last training)")
    if max_psi > r.drift_psi:
        out.append(f"input drift (max PSI {max_psi:.2f} > {r.drift_psi})")
    if evaluation.mae and now.mae is not None and now.mae > evaluation.mae * (1 + r.error_growth):
        out.append(f"error growth (MAE {now.mae:.0f} s vs {evaluation.mae:.0f} s at evaluation)")
    before = started.slice_bias if started else {}
    grown = {s: b for s, b in now.slice_bias.items() if s in before and abs(b - before[s]) > r.slice_bias_growth_s}
    for s, b in sorted(grown.items(), key=lambda kv: -abs(kv[1] - before[kv[0]])):
        out.append(f"slice bias growth ({s}: bias {b:+.0f} s vs {before[s]:+.0f} s when it started serving)")
    if now.unseen_area_share > r.unseen_area_share:
        out.append(f"unseen areas ({now.unseen_area_share:.1%} of stops in areas the model never saw)")
    return out


def trailing(frames: list[pd.DataFrame], weeks: int) -> pd.DataFrame:
    """The last ``weeks`` of a champion's served weeks as one frame."""
    return pd.concat(frames[-weeks:], ignore_index=True) if frames else pd.DataFrame()
