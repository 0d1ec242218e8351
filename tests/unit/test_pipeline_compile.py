"""The compiled pipeline: every task, the condition, the exit handler, retries, the image."""

import yaml

from components.config import load_config
from components.platform import platform
from pipelines.submit import cluster_config, compile_cluster_pipeline, compile_pipeline

TASKS = {"ingest-op", "validate-op", "features-op", "train-op", "evaluate-op", "register-op", "deploy-op", "summary-op"}


def load(path):
    return yaml.safe_load(path.read_text())


def all_tasks(spec):
    tasks = dict(spec["root"]["dag"]["tasks"])
    for comp in spec["components"].values():
        tasks.update(comp.get("dag", {}).get("tasks", {}))
    return tasks


def test_compiled_pipeline_structure(tmp_path):
    spec = load(compile_pipeline(tmp_path / "p.yaml") and tmp_path / "p.yaml")
    tasks = all_tasks(spec)
    assert TASKS <= set(tasks)
    # The exit handler: summary runs after the handler group whatever its outcome.
    summary = spec["root"]["dag"]["tasks"]["summary-op"]
    assert summary["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    # The condition: register and deploy sit under a branch on evaluate's verdict.
    conditions = [t for t in tasks.values() if t.get("triggerPolicy", {}).get("condition")]
    assert len(conditions) == 1 and "evaluate-op-Output" in conditions[0]["triggerPolicy"]["condition"]
    branch = spec["components"][conditions[0]["componentRef"]["name"]]["dag"]["tasks"]
    assert set(branch) == {"register-op", "deploy-op"}
    assert branch["deploy-op"]["dependentTasks"] == ["register-op"]
    # Order: each step consumes the previous one's output.
    assert "ingest-op" in tasks["validate-op"]["dependentTasks"]
    assert "train-op" in tasks["evaluate-op"]["dependentTasks"]
    # Retries with backoff on the steps that touch the network, none on validation.
    assert tasks["train-op"]["retryPolicy"]["maxRetryCount"] == 2
    assert "retryPolicy" not in tasks["validate-op"]
    # Every executor runs the project image.
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {platform().image.ref}
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert {"data_root", "run_uri", "num_workers", "epochs", "min_improvement", "last_weeks"} <= set(params)


def test_cluster_build_injects_services_and_secret(tmp_path):
    cfg = cluster_config(load_config())
    assert cfg.train.backend == "kuberay" and cfg.deploy.backend == "kubernetes"
    out = compile_cluster_pipeline(tmp_path / "c.yaml", cfg)
    docs = list(yaml.safe_load_all(out.read_text()))
    platform_spec = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    from components.cluster.podspec import S3_SECRET

    assert all(e["secretAsEnv"][0]["secretName"] == S3_SECRET for e in platform_spec.values())
    env = {v["name"]: v["value"] for e in docs[0]["deploymentSpec"]["executors"].values() for v in e["container"]["env"]}
    assert env["MLFLOW_TRACKING_URI"].startswith("http://mlflow.") and env["AWS_ENDPOINT_URL"].startswith("http://minio.")
