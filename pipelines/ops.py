"""Thin KFP components: resolve artifact paths, call one library step, write outputs.

Lightweight Python components with the project image as ``base_image`` and
``install_kfp_package=False``; the project is imported inside each body, so the
same component runs in KFP's local SubprocessRunner and in a cluster pod.
(No ``from __future__ import annotations`` here: KFP reads the real types.)
"""


from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from components.core.platform import platform

IMAGE = platform().image.ref
component = dsl.component(base_image=IMAGE, install_kfp_package=False)


@component
def ingest_op(config_json: str, data_root: str, last_weeks: int, simulate_if_empty: bool, run_uri: str, job_id: str,
              dataset: Output[Dataset]) -> str:
    from pipelines.run_uri import resolve

    run_uri = resolve(run_uri, job_id)
    from components.core.config import config_with
    from components.steps.ingest import ingest

    cfg = config_with(config_json)
    out = ingest(data_root, dataset.path, last_weeks, run_uri, cfg.data if simulate_if_empty else None)
    dataset.metadata.update({"version": out.data_version, "rows": out.rows, "weeks": out.weeks})
    return out.data_version


@component
def validate_op(config_json: str, data_root: str, data_version: str, fail_on_rejected: bool, run_uri: str, job_id: str,
                clean: Output[Dataset], report: Output[Markdown]) -> str:
    from pipelines.run_uri import resolve

    run_uri = resolve(run_uri, job_id)
    from components.core.config import config_with
    from components.steps.validate import validate_dataset

    out = validate_dataset(config_with(config_json), data_root, data_version, clean.path, report.path,
                           fail_on_rejected=fail_on_rejected, run_uri=run_uri)
    clean.metadata.update({"rows_in": out.rows_in, "rows_accepted": out.rows_accepted,
                           "rows_quarantined": out.rows_quarantined, "clean_version": out.clean_version})
    return out.clean_version


@component
def features_op(config_json: str, run_uri: str, job_id: str, clean: Input[Dataset], features: Output[Dataset]):
    from pipelines.run_uri import resolve

    run_uri = resolve(run_uri, job_id)
    from pathlib import Path

    from components.core.config import config_with
    from components.steps.featurize import featurize
    from components.steps.validate import CLEAN_FILE

    out = featurize(config_with(config_json), Path(clean.path) / CLEAN_FILE, features.path, run_uri)
    features.metadata.update({"rows": out.rows})


@component
def tune_op(config_json: str, tune_trials: int, num_workers: int, epochs: int, data_version: str, run_uri: str,
            job_id: str, features: Input[Dataset]) -> str:
    from pipelines.run_uri import resolve

    run_uri = resolve(run_uri, job_id)
    from components.core.config import config_with
    from components.steps.tune import tune_step
    from pipelines.parameters import as_fields

    cfg = config_with(config_json, as_fields(num_workers=num_workers, epochs=epochs))
    return tune_step(cfg, features.path, tune_trials, data_version, run_uri).settings_json


@component
def train_op(config_json: str, num_workers: int, epochs: int, tuned_json: str, data_version: str, run_uri: str,
             job_id: str, features: Input[Dataset], model: Output[Model],
             metrics: Output[Metrics]) -> NamedTuple("TrainOutputs", [("run_id", str), ("model_version", str)]):
    from pipelines.run_uri import resolve

    run_uri = resolve(run_uri, job_id)
    import json

    from components.core.config import config_with
    from components.steps.train import train_step
    from pipelines.parameters import as_fields

    # The tune step's best settings (empty when tuning is off) go over config_json, under the parameters.
    tuned = {f"train.{k}": v for k, v in (json.loads(tuned_json) if tuned_json else {}).items()}
    cfg = config_with(config_json, as_fields(num_workers=num_workers, epochs=epochs), tuned=tuned)
    out = train_step(cfg, features.path, model.path, data_version, run_uri)
    model.metadata.update({"model_uri": out.model_uri, "version": out.model_version, "run_id": out.run_id})
    for key, value in (("best_val_mae_s", out.best_val_mae_s), ("train_seconds", out.train_seconds),
                       ("samples_per_s", out.samples_per_s)):
        metrics.log_metric(key, float(value))
    from collections import namedtuple

    return namedtuple("TrainOutputs", ["run_id", "model_version"])(out.run_id, out.model_version)


@component
def evaluate_op(
    config_json: str,
    min_improvement: float,
    max_slice_regression: float,
    run_id: str,
    run_uri: str,
    job_id: str,
    features: Input[Dataset],
    model: Input[Model],
    report: Output[Markdown],
    evaluation: Output[Artifact],
    metrics: Output[Metrics],
) -> bool:
    from pipelines.run_uri import resolve

    run_uri = resolve(run_uri, job_id)
    # One plain output (blessed) keeps dsl.If resolvable by the local runner as well as on the cluster.
    from pathlib import Path

    from components.core.config import config_with
    from components.evaluate.evaluation import inline_images
    from components.steps.evaluate import dashboard_mae_metric, evaluate_step
    from pipelines.parameters import as_fields

    cfg = config_with(
        config_json, as_fields(min_improvement=min_improvement, max_slice_regression=max_slice_regression)
    )
    out = evaluate_step(cfg, features.path, model.path, evaluation.path, run_id, run_uri)
    # One self-contained file for the UI.
    Path(report.path).write_text(inline_images(Path(evaluation.path) / "report.md"))
    for name, m in out.metrics.items():
        if m:
            metrics.log_metric(dashboard_mae_metric(name), m["mae"])
    metrics.log_metric("candidate_delay_std_s", out.route_kpi["candidate"]["delay_std_s"])
    return bool(out.blessed)


@component
def register_op(config_json: str, model_version: str, run_uri: str, job_id: str) -> str:
    from pipelines.run_uri import resolve

    run_uri = resolve(run_uri, job_id)
    from components.core.config import config_with
    from components.steps.register import promote_step

    return promote_step(config_with(config_json), model_version, run_uri).version


@component
def deploy_op(config_json: str, run_uri: str, job_id: str, features: Input[Dataset], metrics: Input[Metrics]) -> str:
    from pipelines.run_uri import resolve

    run_uri = resolve(run_uri, job_id)
    from components.core.config import config_with
    from components.steps.deploy import deploy_step
    from components.steps.evaluate import dashboard_mae_metric

    expected_mae = float(metrics.metadata[dashboard_mae_metric("candidate")])
    return str(deploy_step(config_with(config_json), features.path, expected_mae, run_uri).version)


@component
def summary_op(run_uri: str, job_id: str, status: dsl.PipelineTaskFinalStatus) -> str:
    from pipelines.run_uri import resolve

    run_uri = resolve(run_uri, job_id)
    import json

    from components.steps.summary import summarize

    summary = summarize(run_uri, status.state, status.error_message or None)
    print(json.dumps({k: summary[k] for k in ("status", "data_version", "rows", "verdict")}, indent=1))
    return summary["status"]



@component
def plan_op(config_json: str, orders_uri: str, out_uri: str, model_uri: str, calibration_uri: str, job_id: str,
            plan: Output[Dataset], report: Output[Markdown]) -> str:
    from pipelines.run_uri import resolve

    # A folder (ending in /) gets one plan per run, named by the job id.
    out_uri = resolve(out_uri, job_id) + ".parquet" if out_uri.endswith("/") else out_uri
    import json
    from pathlib import Path

    from components.core.config import config_with
    from components.core.storage import Storage
    from components.learn.plan_view import render_plan_summary
    from components.learn.planning import plan_file

    summary = plan_file(config_with(config_json), orders_uri, out_uri, model_uri=model_uri or None,
                        calibration_uri=calibration_uri or None)
    Path(plan.path).write_bytes(Storage().read_bytes(out_uri))  # also an artifact the dashboard can show
    plan.metadata.update({k: summary[k] for k in ("stops", "routes", "level", "model_version", "out")})
    Path(report.path).write_text(render_plan_summary(summary))
    return json.dumps(summary)


@component
def monitor_op(config_json: str, data_root: str, log_uri: str, report_uri: str, report: Output[Markdown],
               metrics: Output[Metrics]) -> str:
    import json
    from pathlib import Path

    from components.core.config import config_with
    from components.serving.metric_names import SLICE_ALL
    from components.serving.monitor import FIGURES, render_report, run_monitor

    out = run_monitor(config_with(config_json), data_root=data_root or None, log_uri=log_uri or None,
                      report_uri=report_uri or None)
    Path(report.path).write_text(render_report(out))
    overall = next(row for row in out["slices"] if row["slice"] == SLICE_ALL)
    for key in FIGURES:
        if overall.get(key) is not None:
            metrics.log_metric(f"online_{key}", float(overall[key]))
    return json.dumps({k: out.get(k) for k in ("version", "rows_logged", "rows_joined", "join_rate", "mlflow_run_id")})
