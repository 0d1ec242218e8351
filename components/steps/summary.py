"""The run summary: what the exit handler writes, whatever happened to the run."""

from __future__ import annotations

import logging
import time

from components.core.storage import Storage, StorageError, join

log = logging.getLogger(__name__)

MODELS = ("candidate", "baseline", "baseline_calibrated", "baseline_history", "champion")
STEPS = ("ingest", "validate", "features", "train", "evaluate", "register", "deploy")


def summarize(run_uri: str, status: str = "SUCCEEDED", error: str | None = None) -> dict:
    storage = Storage()
    steps = {}
    for step in STEPS:
        try:
            steps[step] = storage.read_json(join(run_uri, "steps", f"{step}.json"))
        except StorageError:
            steps[step] = None
    ingest, validate, train, ev = (
        steps["ingest"] or {},
        steps["validate"] or {},
        steps["train"] or {},
        steps["evaluate"] or {},
    )
    metrics = ev.get("metrics") or {}
    kpi = ev.get("route_kpi") or {}
    deployed = steps["deploy"] or {}
    summary = {
        "status": status,
        "error": error,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "run_uri": run_uri,
        "data_version": ingest.get("data_version"),
        "clean_version": validate.get("clean_version"),
        "rows": {
            "in": validate.get("rows_in"),
            "accepted": validate.get("rows_accepted"),
            "quarantined": validate.get("rows_quarantined"),
        },
        "rejected_batches": validate.get("rejected_batches"),
        "metrics": {k: metrics.get(k) for k in MODELS},
        "route_kpi": {k: kpi.get(k) for k in MODELS},
        "intervals": ev.get("intervals"),
        "fairness": ev.get("fairness"),
        "windows": ev.get("windows"),
        "champion_test": ev.get("champion_test"),
        "verdict": {"blessed": ev.get("blessed"), "reasons": ev.get("reasons", [])},
        # The registry URI: `servicetime serve --model-uri` and mlflow.pyfunc.load_model accept it (MLflow 3
        # keeps a model under its own logged-model id, so the run's `runs:/<id>/model` does not resolve).
        "model": {
            "name": train.get("model_name"),
            "version": train.get("model_version"),
            "uri": (
                f"models:/{train['model_name']}/{train['model_version']}"
                if train.get("model_name") and train.get("model_version")
                else train.get("model_uri")
            ),
            "logged_model": train.get("model_uri"),
            "run_id": train.get("run_id"),
            "champion": (steps["register"] or {}).get("version"),
            "deployed": deployed.get("version"),
        },
        "training": {
            k: train.get(k) for k in ("train_seconds", "samples_per_s", "best_val_mae_s", "num_workers", "ray_init_s",
                                     "epoch_seconds_sum")
        },
        "artifacts": {
            "dataset": ingest.get("uri"),
            "quarantine": validate.get("quarantine_uri"),
            "features": (steps["features"] or {}).get("path"),
            "model_bundle": train.get("bundle"),
            "evaluation_report": ev.get("report"),
            "steps": join(run_uri, "steps"),
            "summary": join(run_uri, "summary.json"),
        },
        "steps_completed": [s for s in STEPS if steps[s] is not None],
    }
    try:
        storage.write_json(join(run_uri, "summary.json"), summary)
    except StorageError as exc:  # the store may be what failed the run: the summary is still returned
        log.warning("cannot write %s: %s", join(run_uri, "summary.json"), exc)
    return summary


def render_text(summary: dict) -> str:
    """The summary a person reads at the end of ``servicetime run``."""
    m, k, v = summary["metrics"], summary["route_kpi"], summary["verdict"]
    lines = [f"run {summary['status']}  ({summary['run_uri']})"]
    if summary.get("error"):
        lines.append(f"  error: {summary['error']}")
    rows = summary["rows"]
    lines.append(
        f"  data     version {summary['data_version']}  rows in {rows['in']}, accepted {rows['accepted']}, "
        f"quarantined {rows['quarantined']}"
    )
    nan = float("nan")
    for name in ("baseline", "baseline_calibrated", "baseline_history", "champion", "candidate"):
        if m.get(name):
            kp = k.get(name) or {}
            lines.append(f"  {name:<19} MAE {m[name]['mae']:6.1f} s   bias {m[name]['bias']:+6.1f} s   "
                         f"delay std {kp.get('delay_std_s', nan):5.0f} s   late {kp.get('late_share', nan):6.1%}   "
                         f"early {kp.get('early_share', nan):6.1%}")
    if m.get("candidate") and m.get("baseline"):
        gains = ", ".join(f"{b} {1 - m['candidate']['mae'] / m[b]['mae']:+.1%}"
                          for b in ("baseline", "baseline_calibrated", "baseline_history") if m.get(b))
        lines.append(f"  candidate's MAE gain: {gains}")
    iv = summary.get("intervals") or {}
    if iv.get("coverage") is not None:
        lines.append(
            f"  intervals  nominal {iv['nominal']:.0%}  coverage {iv['coverage']:.1%}  "
            f"mean width {iv['mean_width_s']:.0f} s"
        )
    for group, f in (summary.get("fairness") or {}).items():
        lines.append(
            f"  fairness   {group}: bias gap {f['bias_gap_s']:.1f} s, late-share gap {f['late_share_gap']:.1%}"
        )
    if v.get("blessed") is not None:
        lines.append(f"  verdict  {'BLESSED' if v['blessed'] else 'NOT BLESSED'}")
        lines += [f"    {r}" for r in v["reasons"]]
    model = summary["model"]
    if model.get("version"):
        lines.append(
            f"  model    {model['name']} v{model['version']}  champion={model.get('champion') or '-'}  {model['uri']}"
        )
    for name, where in summary["artifacts"].items():
        if where:
            lines.append(f"  {name:<18} {where}")
    return "\n".join(lines)
