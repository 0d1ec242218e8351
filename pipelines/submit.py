"""Compile the pipeline, and submit runs to a KFP endpoint with the cluster's settings."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from components.cluster.podspec import (  # created by infra/bootstrap.sh in the KFP namespace too
    KEY_SALT_SECRET,
    MLFLOW_AUTH_KEYS,
    MLFLOW_AUTH_SECRET,
    S3_SECRET,
)
from components.core.config import Config
from components.core.keys import SALT_ENV
from components.core.platform import platform
from pipelines.parameters import config_json_for, knob_values

CLUSTER_PIPELINE = "servicetime-cluster"  # the compiled pipeline's own name
UPLOAD_NAME = "servicetime"  # the pipeline as the dashboard lists it
PIPELINE_DESCRIPTION = "Delivery service-time model: data to deployed champion, on this cluster"
PLAN_UPLOAD_NAME = "servicetime-plan"
PLAN_DESCRIPTION = "Next week's planned stops: service times and promised arrival windows from the champion"
MONITOR_UPLOAD_NAME = "servicetime-monitor"
MONITOR_DESCRIPTION = "Online quality: the model servers' prediction log joined with the labels that arrived since"
KINDS = ("train", "plan", "monitor")  # the cluster's pipelines, by what they do
S3_SECRET_KEYS = {"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"}


def compile_pipeline(out: str | Path) -> str:
    from kfp import compiler

    from pipelines.pipeline import servicetime_pipeline

    Path(out).parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(servicetime_pipeline, str(out))
    return str(out)


def compile_plan_pipeline(out: str | Path) -> str:
    from kfp import compiler

    from pipelines.plan_pipeline import servicetime_plan

    Path(out).parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(servicetime_plan, str(out))
    return str(out)


def cluster_config(cfg: Config) -> Config:
    """The same config with the cluster's services: MLflow, MinIO, KubeRay, Kubernetes deploys."""
    p = platform()
    ns = p.namespace
    return cfg.model_copy(update={
        "workspace": "/tmp/servicetime",
        "storage": cfg.storage.model_copy(update={"endpoint_url": f"http://minio.{ns}.svc:{p.ports.s3}"}),
        "tracking": cfg.tracking.model_copy(update={"tracking_uri": f"http://mlflow.{ns}.svc:{p.ports.mlflow}"}),
        "train": cfg.train.model_copy(update={"backend": "kuberay",
                                              "checkpoint_uri": f"s3://{p.buckets.artifacts}/checkpoints"}),
        "deploy": cfg.deploy.model_copy(update={"backend": "kubernetes", "namespace": ns,
                                                "prometheus_url": f"http://prometheus.{ns}.svc:{p.ports.prometheus}"}),
    })


def pipeline_env(cfg: Config) -> dict[str, str]:
    p = platform()
    return {
        "AWS_ENDPOINT_URL": cfg.storage.endpoint_url or "",
        "MLFLOW_S3_ENDPOINT_URL": cfg.storage.endpoint_url or "",
        "MLFLOW_TRACKING_URI": cfg.tracking.tracking_uri or "",
        "MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK": "true",
        "SERVICETIME_NAMESPACE": p.namespace,
    }


def submit(cfg: Config, host: str, recurring_cron: str | None = None, experiment: str = "servicetime",
           data_root: str | None = None, namespace: str | None = None) -> dict:
    """Create a run (or a recurring run) through ``kfp.Client`` with the cluster's settings."""
    import tempfile

    import kfp

    ccfg = cluster_config(cfg)
    p = platform()
    run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    arguments = {
        "data_root": data_root or f"s3://{p.buckets.data}",
        "run_uri": f"s3://{p.buckets.artifacts}/runs/{run_id}",
        "config_json": config_json_for(ccfg),
        **knob_values(ccfg),
    }
    client = kfp.Client(host=host, namespace=namespace)
    with tempfile.TemporaryDirectory() as tmp:
        package = compile_cluster_pipeline(Path(tmp) / "servicetime.yaml", ccfg)
        exp = client.create_experiment(experiment, namespace=namespace)
        if recurring_cron:
            job = client.create_recurring_run(experiment_id=exp.experiment_id, job_name=f"servicetime-{recurring_cron}",
                                              cron_expression=recurring_cron, pipeline_package_path=str(package),
                                              params=arguments, enable_caching=False)
            return {
                "recurring_run_id": job.recurring_run_id,
                "cron": recurring_cron,
                "arguments": {**arguments, "config_json": "..."},
            }
        run = client.create_run_from_pipeline_package(
            str(package),
            arguments=arguments,
            run_name=f"servicetime-{run_id}",
            experiment_name=experiment,
            namespace=namespace,
            enable_caching=False,
        )
    return {
        "run_id": run.run_id,
        "url": f"{host.rstrip('/')}/#/runs/details/{run.run_id}",
        "run_uri": arguments["run_uri"],
    }


def cluster_defaults(cfg: Config) -> dict:
    """What *Create run* in the dashboard starts with: the cluster's data, a run folder per job, this config."""
    p = platform()
    return {
        "data_root": f"s3://{p.buckets.data}",
        "run_uri": f"s3://{p.buckets.artifacts}/runs/",  # a folder: each run gets <job id> under it
        "config_json": config_json_for(cfg),
        **knob_values(cfg),
    }


def plan_defaults(cfg: Config) -> dict:
    """The plan pipeline's *Create run* defaults: orders where the README says to put them, a plan per run."""
    p = platform()
    return {"orders_uri": f"s3://{p.buckets.data}/orders/next-week.parquet",
            "out_uri": f"s3://{p.buckets.artifacts}/plans/", "config_json": cfg.model_dump_json()}


def monitor_defaults(cfg: Config) -> dict:
    """The monitor pipeline's defaults: the log and the reports where the cluster's model servers keep them."""
    from components.core.platform import cluster_prediction_log_uri, cluster_report_uri

    return {"data_root": f"s3://{platform().buckets.data}", "log_uri": cluster_prediction_log_uri(),
            "report_uri": cluster_report_uri(), "config_json": cfg.model_dump_json()}


def _cluster_hook(cfg: Config):
    from kfp import dsl, kubernetes

    env = pipeline_env(cfg)

    def configure(task: dsl.PipelineTask) -> None:
        for key, value in env.items():
            task.set_env_variable(key, value)
        kubernetes.use_secret_as_env(task, secret_name=S3_SECRET, secret_key_to_env=S3_SECRET_KEYS)
        # MLflow runs its basic-auth app on the cluster: the steps log in with the generated admin.
        kubernetes.use_secret_as_env(task, secret_name=MLFLOW_AUTH_SECRET,
                                     secret_key_to_env={k: k for k in MLFLOW_AUTH_KEYS})
        # Real ids arriving in the landing zone are hashed at ingest with the cluster's secret salt.
        kubernetes.use_secret_as_env(task, secret_name=KEY_SALT_SECRET, secret_key_to_env={SALT_ENV: SALT_ENV})

    return configure


def compile_cluster_pipeline(out: Path, cfg: Config, kind: str = "train") -> Path:
    """Compile with the cluster's environment on every task (endpoints as values, credentials
    from a Secret) and the cluster's defaults, so the dashboard's defaults make a real run.
    ``kind``: one of ``KINDS``, the training pipeline, planning (``servicetime-plan``) or the labels
    join (``servicetime-monitor``)."""
    from kfp import compiler

    if kind not in KINDS:
        raise ValueError(f"no {kind!r} pipeline; known: {', '.join(KINDS)}")
    if kind == "plan":
        from pipelines.plan_pipeline import PLAN_PIPELINE, make_plan_pipeline

        pipeline = make_plan_pipeline(_cluster_hook(cfg), name=PLAN_PIPELINE, defaults=plan_defaults(cfg))
    elif kind == "monitor":
        from pipelines.monitor_pipeline import MONITOR_PIPELINE, make_monitor_pipeline

        pipeline = make_monitor_pipeline(_cluster_hook(cfg), name=MONITOR_PIPELINE, defaults=monitor_defaults(cfg))
    else:
        from pipelines.pipeline import make_pipeline

        pipeline = make_pipeline(_cluster_hook(cfg), name=CLUSTER_PIPELINE, defaults=cluster_defaults(cfg))
    compiler.Compiler().compile(pipeline, str(out))
    return out


def git_version(repo: Path | None = None) -> str:
    """The pipeline version's name: the checkout's commit (with -dirty for local changes)."""
    import subprocess

    repo = repo or Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return f"unversioned-{time.strftime('%Y%m%d-%H%M%S')}"
    return f"{commit}-dirty" if dirty else commit


def upload(cfg: Config, host: str, version: str | None = None, experiment: str = "servicetime",
           recurring_cron: str | None = None, namespace: str | None = None, client=None, kind: str = "train") -> dict:
    """Put a pipeline in the KFP dashboard: ``servicetime`` (``servicetime-plan``, ``servicetime-monitor`` by kind),
    a version named by the commit, an experiment, and (when asked) a recurring run of that version.
    Safe to repeat."""
    import tempfile

    import kfp

    ccfg = cluster_config(cfg)
    version = version or git_version()
    client = client or kfp.Client(host=host, namespace=namespace)
    name, description = {"train": (UPLOAD_NAME, PIPELINE_DESCRIPTION), "plan": (PLAN_UPLOAD_NAME, PLAN_DESCRIPTION),
                         "monitor": (MONITOR_UPLOAD_NAME, MONITOR_DESCRIPTION)}[kind]
    with tempfile.TemporaryDirectory() as tmp:
        package = str(compile_cluster_pipeline(Path(tmp) / f"{name}.yaml", ccfg, kind=kind))
        pipeline_id = client.get_pipeline_id(name)
        if pipeline_id is None:
            pipeline_id = client.upload_pipeline(package, pipeline_name=name, description=description).pipeline_id
        versions = client.list_pipeline_versions(pipeline_id, page_size=200).pipeline_versions or []
        found = next((v for v in versions if v.display_name == version), None)
        created = found is None
        if created:
            found = client.upload_pipeline_version(package, pipeline_version_name=version, pipeline_id=pipeline_id,
                                                   description=f"{description} (commit {version})")
    exp = client.create_experiment(experiment, namespace=namespace)  # returns the existing one by name
    out = {"pipeline_id": pipeline_id, "version_id": found.pipeline_version_id, "version": version,
           "uploaded": created, "experiment_id": exp.experiment_id}
    if recurring_cron:
        out["recurring_run_id"] = _recurring_run(client, exp.experiment_id, f"{name}-weekly", recurring_cron,
                                                 pipeline_id, found.pipeline_version_id)
    return out


def _recurring_run(client, experiment_id: str, job_name: str, cron: str, pipeline_id: str, version_id: str) -> str:
    """One recurring run of that name, of this version: kept when it already is, else replaced (a bootstrap
    run again, or a new commit, must not leave two weekly runs behind)."""
    listed = client.list_recurring_runs(experiment_id=experiment_id, page_size=200).recurring_runs or []
    for job in (j for j in listed if j.display_name == job_name):
        ref = job.pipeline_version_reference
        if ref is not None and ref.pipeline_version_id == version_id and job.trigger is not None:
            return job.recurring_run_id
        client.delete_recurring_run(job.recurring_run_id)
    job = client.create_recurring_run(experiment_id=experiment_id, job_name=job_name, cron_expression=cron,
                                      pipeline_id=pipeline_id, version_id=version_id, enable_caching=False,
                                      max_concurrency=1, no_catchup=True)
    return job.recurring_run_id
