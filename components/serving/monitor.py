"""Online quality: the prediction log joined with the labels that arrive a week later.

    servicetime monitor run      # join, compute, write a versioned report, log it to MLflow

The model server logs every answered stop (``components.serving.predlog``) with
its ``delivery_id``; each weekly batch that lands in the dataset store carries
the true service time of those deliveries. Joined on ``delivery_id`` (the last
prediction for a delivery counts: a re-planned route re-asks), they give the
figures that offline evaluation can only estimate:

* MAE and bias (prediction - actual, seconds), per stop;
* late share: stops reached after the promised window, with the route's
  arrival delay built from the served predictions (``components.evaluate.kpi``);
* interval coverage: share of labels inside the served (low, high);

overall and per slice: area type, areas the model never saw, customers without
history in the served snapshot (and their complements). Reports are versioned
by content under ``<workspace>/monitor/reports/<version>/report.json`` with
``LATEST`` naming the newest; the model server re-reads it and exposes the
figures to Prometheus (``metric_names.ONLINE_*``), and the alert rules and
dashboard read those names (``components.render.monitoring``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Any

import numpy as np
import pandas as pd

from components.core.config import Config
from components.core.schema import ID, LABEL
from components.core.storage import Storage, join
from components.data.datasets import DatasetStore
from components.evaluate.kpi import arrival_delays
from components.serving import metric_names as names
from components.serving.predlog import log_files, read_log

log = logging.getLogger(__name__)

LATEST = "LATEST"
REPORT = "report.json"
FIGURES = ("rows", "mae", "bias", "late_share", "coverage")
NEW_AREA, KNOWN_AREA = "new area", "known area"
NEW_CUSTOMER, RETURNING = "new customer", "returning customer"


# --- where things live --------------------------------------------------------------------


def prediction_log_uri(cfg: Config) -> str:
    return cfg.monitor.prediction_log_uri or join(cfg.workspace, "predictions")


def online_report_uri(cfg: Config) -> str:
    return cfg.monitor.report_uri or join(cfg.workspace, "monitor")


def read_latest_report(root_uri: str, storage: Storage | None = None) -> dict | None:
    storage = storage or Storage()
    latest = join(root_uri, LATEST)
    if not storage.exists(latest):
        return None
    version = storage.read_bytes(latest).decode().strip()
    return storage.read_json(join(root_uri, "reports", version, REPORT))


# --- the join ---------------------------------------------------------------------------


def arrived_labels(store: DatasetStore, batches: list[str] | None = None, min_s: float = 20.0,
                   max_s: float = 3600.0) -> pd.DataFrame:
    """The labelled rows of the arrived weekly batches (implausible labels are no truth to judge by)."""
    frames = []
    for name in batches if batches is not None else store.raw_batches():
        frame = store.storage.read_parquet(store.raw_uri(name))
        frames.append(frame.assign(batch=name))
    if not frames:
        return pd.DataFrame(columns=[ID, LABEL, "area_type", "area_id", "batch"])
    labels = pd.concat(frames, ignore_index=True)
    y = pd.to_numeric(labels[LABEL], errors="coerce")
    labels = labels[y.between(min_s, max_s)]
    return labels.drop_duplicates(ID, keep="last")


def join_labels(predictions: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Served predictions with their label: one row per delivery, its last prediction."""
    logged = predictions[predictions["delivery_id"].notna()]
    logged = logged.sort_values("predicted_at", kind="stable").drop_duplicates("delivery_id", keep="last")
    logged = logged.rename(columns={"service_time_s": "predicted_s"})  # the label has the same name
    truth = labels[[ID, LABEL, "area_type", "area_id", "batch"]].rename(columns={ID: "delivery_id"})
    truth = truth.assign(delivery_id=truth["delivery_id"].astype(str))
    return logged.merge(truth, on="delivery_id", how="inner").reset_index(drop=True)


# --- the figures ---------------------------------------------------------------------------


def slice_masks(joined: pd.DataFrame) -> dict[str, np.ndarray]:
    """The online slices: a fixed, small set (they become Prometheus label values)."""
    masks = {names.SLICE_ALL: np.ones(len(joined), dtype=bool)}
    for area_type in sorted(joined["area_type"].astype(str).unique()):
        masks[f"area_type={area_type}"] = (joined["area_type"].astype(str) == area_type).to_numpy()
    known_area = joined["area_known"].fillna(False).to_numpy(bool)
    found = joined["history_found"].fillna(False).to_numpy(bool)
    masks[NEW_AREA], masks[KNOWN_AREA] = ~known_area, known_area
    masks[NEW_CUSTOMER], masks[RETURNING] = ~found, found
    return masks


def figures(joined: pd.DataFrame, window_s: float, min_rows: int = 1) -> list[dict[str, Any]]:
    """One row of figures per slice (slices with fewer than ``min_rows`` joined stops show rows only)."""
    if joined.empty:
        return [{"slice": names.SLICE_ALL, "rows": 0, "mae": None, "bias": None, "late_share": None,
                 "coverage": None}]
    y = joined[LABEL].to_numpy(float)
    pred = joined["predicted_s"].to_numpy(float)
    err = pred - y
    # Delay at each stop from the served plan; a route's stops that were not all joined still
    # contribute what is known (the arrival there is still built from what was served).
    delay = arrival_delays(joined.assign(**{LABEL: y}), pred).to_numpy()
    inside = (y >= joined["low_s"].to_numpy(float)) & (y <= joined["high_s"].to_numpy(float))
    out = []
    for name, mask in slice_masks(joined).items():
        n = int(mask.sum())
        row: dict[str, Any] = {"slice": name, "rows": n, "mae": None, "bias": None, "late_share": None,
                               "coverage": None}
        if n >= min_rows:
            row.update(mae=round(float(np.mean(np.abs(err[mask]))), 3), bias=round(float(np.mean(err[mask])), 3),
                       late_share=round(float(np.mean(delay[mask] > window_s)), 4),
                       coverage=round(float(np.mean(inside[mask])), 4))
        out.append(row)
    return out


def online_report(cfg: Config, predictions: pd.DataFrame, labels: pd.DataFrame) -> dict[str, Any]:
    """The report: overall and per-slice figures, and the same per arrived batch."""
    joined = join_labels(predictions, labels)
    window, min_rows = cfg.eval.promised_window_s, cfg.monitor.min_slice_rows
    by_batch = [{"batch": b, "slices": figures(part.reset_index(drop=True), window, min_rows)}
                for b, part in joined.groupby("batch", sort=True)]
    logged_with_id = int(predictions["delivery_id"].notna().sum()) if len(predictions) else 0
    return {
        "rows_logged": len(predictions),
        "rows_logged_with_id": logged_with_id,
        "rows_joined": len(joined),
        "join_rate": round(len(joined) / logged_with_id, 4) if logged_with_id else None,
        "models": sorted(str(v) for v in joined["model_version"].dropna().unique()) if len(joined) else [],
        "batches": sorted(str(b) for b in joined["batch"].unique()) if len(joined) else [],
        "interval_nominal": cfg.calibration.interval_nominal,
        "promised_window_s": window,
        "slices": figures(joined, window, min_rows),
        "by_batch": by_batch,
    }


def report_version(report: dict, inputs: list[str]) -> str:
    """Content version: the same log files, batches and figures give the same version."""
    blob = json.dumps({"inputs": sorted(inputs), "report": report}, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def write_report(root_uri: str, report: dict, inputs: list[str], storage: Storage | None = None) -> str:
    """Write ``reports/<version>/report.json`` and point ``LATEST`` at it; returns the version."""
    storage = storage or Storage()
    version = report_version(report, inputs)
    report = {**report, "version": version, "created_at": time.time()}
    storage.write_json(join(root_uri, "reports", version, REPORT), report)
    storage.write_text(join(root_uri, LATEST), version + "\n")  # last: the report is complete
    return version


def mlflow_metrics(report: dict) -> dict[str, float]:
    """The report's figures as MLflow metric names (``online_<figure>`` and ``online_<figure>__<slice>``)."""
    from components.learn.tracking import slice_metric

    out: dict[str, float] = {}
    for row in report["slices"]:
        for key in FIGURES:
            if row.get(key) is not None:
                name = key if row["slice"] == names.SLICE_ALL else slice_metric(key, row["slice"])
                out[f"online_{name}"] = float(row[key])
    return out


def log_to_mlflow(cfg: Config, report: dict, version: str) -> str:
    """One MLflow run per report, in the project's experiment; returns its run id."""
    import mlflow

    from components.learn import tracking

    tracking.setup(cfg)
    with mlflow.start_run(run_name=f"monitor-{version}", tags={"servicetime.step": "monitor",
                                                                "servicetime.online_report": version}) as run:
        mlflow.log_metrics(mlflow_metrics(report))
        mlflow.log_dict(report, "online_report.json")
        return run.info.run_id


def run_monitor(cfg: Config, data_root: str | None = None, log_uri: str | None = None,
                report_uri: str | None = None, mlflow_log: bool = True) -> dict:
    """The step: read the log and the arrived batches, join, report, log; returns the report."""
    storage = Storage()
    log_uri = log_uri or prediction_log_uri(cfg)
    report_uri = report_uri or online_report_uri(cfg)
    store = DatasetStore(data_root or join(cfg.workspace, "data"), storage)
    predictions = read_log(log_uri, storage)
    labels = arrived_labels(store, min_s=cfg.validation.min_service_s, max_s=cfg.validation.max_service_s)
    report = online_report(cfg, predictions, labels)
    inputs = log_files(log_uri, storage) + [f"batch:{b}" for b in store.raw_batches()]
    version = write_report(report_uri, report, inputs, storage)
    report = read_latest_report(report_uri, storage) or report
    if mlflow_log:
        report["mlflow_run_id"] = log_to_mlflow(cfg, report, version)
    return report


def render_report(report: dict) -> str:
    """The report as Markdown, one row per slice (the KFP dashboard shows it beside the run)."""
    def cell(row: dict, key: str, fmt: str) -> str:
        return format(row[key], fmt) if row.get(key) is not None else "-"

    lines = [f"# Online report {report.get('version', '')}", "",
             f"{report['rows_joined']} of {report['rows_logged']} logged predictions joined with a label "
             f"(batches: {', '.join(report['batches']) or 'none'}; models: {', '.join(report['models']) or 'none'}).",
             "", "| slice | rows | MAE (s) | bias (s) | late | interval coverage |", "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['slice']} | {r['rows']} | {cell(r, 'mae', '.1f')} | {cell(r, 'bias', '+.1f')} | "
              f"{cell(r, 'late_share', '.1%')} | {cell(r, 'coverage', '.1%')} |" for r in report["slices"]]
    return "\n".join(lines) + "\n"
