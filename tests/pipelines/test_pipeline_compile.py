"""The compiled pipeline: every task, the condition, the exit handler, retries, the image."""

import yaml

from components.core.config import load_config
from components.core.platform import platform
from pipelines.submit import cluster_config, compile_cluster_pipeline, compile_pipeline

TASKS = {
    "ingest-op",
    "validate-op",
    "features-op",
    "tune-op",
    "train-op",
    "evaluate-op",
    "register-op",
    "deploy-op",
    "summary-op",
}


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
    assert {"data_root", "run_uri", "num_workers", "epochs", "min_improvement", "last_weeks", "tune_trials"} <= set(
        params
    )
    assert params["tune_trials"]["defaultValue"] == 0  # tuning is off unless a user asks for trials
    # The tune step sits between features and train; train reads its best settings.
    assert "features-op" in tasks["tune-op"]["dependentTasks"] and "tune-op" in tasks["train-op"]["dependentTasks"]
    tuned = tasks["train-op"]["inputs"]["parameters"]["tuned_json"]["taskOutputParameter"]
    assert tuned == {"producerTask": "tune-op", "outputParameterKey": "Output"}


def test_cluster_build_injects_services_and_secret(tmp_path):
    cfg = cluster_config(load_config())
    assert cfg.train.backend == "kuberay" and cfg.deploy.backend == "kubernetes"
    out = compile_cluster_pipeline(tmp_path / "c.yaml", cfg)
    docs = list(yaml.safe_load_all(out.read_text()))
    platform_spec = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    from components.cluster.podspec import S3_SECRET

    assert all(e["secretAsEnv"][0]["secretName"] == S3_SECRET for e in platform_spec.values())
    # ...and MLflow's basic-auth login from its own Secret, never as a value in the spec.
    from components.cluster.podspec import MLFLOW_AUTH_KEYS, MLFLOW_AUTH_SECRET

    for e in platform_spec.values():
        auth = next(x for x in e["secretAsEnv"] if x["secretName"] == MLFLOW_AUTH_SECRET)
        assert sorted(k["envVar"] for k in auth["keyToEnv"]) == sorted(MLFLOW_AUTH_KEYS)
    # ...the salt that hashes real ids at ingest from its Secret; and every Secret a step reads is one the
    # bootstrap creates (or copies) in KFP's namespace.
    from components.cluster.podspec import KEY_SALT_SECRET
    from components.core.keys import SALT_ENV
    from components.core.platform import platform
    from components.render.install import secret_names

    for e in platform_spec.values():
        salt = next(x for x in e["secretAsEnv"] if x["secretName"] == KEY_SALT_SECRET)
        assert [(k["secretKey"], k["envVar"]) for k in salt["keyToEnv"]] == [(SALT_ENV, SALT_ENV)]
    read = {x["secretName"] for e in platform_spec.values() for x in e["secretAsEnv"]}
    assert read == set(secret_names()[platform().namespaces.kfp])
    env = {
        v["name"]: v["value"] for e in docs[0]["deploymentSpec"]["executors"].values() for v in e["container"]["env"]
    }
    assert env["MLFLOW_TRACKING_URI"].startswith("http://mlflow.") and env["AWS_ENDPOINT_URL"].startswith("http://minio.")


class FakeClient:
    """Stands in for kfp.Client: records what submit asks the KFP API for."""

    calls: list = []

    def __init__(self, host, namespace=None):
        self.host = host

    def create_experiment(self, name, namespace=None):
        FakeClient.calls.append(("experiment", name))
        return type("Exp", (), {"experiment_id": "exp-1"})()

    def create_run_from_pipeline_package(
        self, package, arguments, run_name, experiment_name, namespace, enable_caching
    ):
        spec = next(yaml.safe_load_all(open(package)))
        FakeClient.calls.append(("run", spec["pipelineInfo"]["name"], arguments, enable_caching))
        return type("Run", (), {"run_id": "run-1"})()

    def create_recurring_run(
        self, experiment_id, job_name, cron_expression, pipeline_package_path, params, enable_caching
    ):
        FakeClient.calls.append(("recurring", cron_expression, params["data_root"]))
        return type("Job", (), {"recurring_run_id": "rec-1"})()


def test_submit_creates_a_run_and_a_recurring_run(monkeypatch):
    import kfp

    from pipelines.submit import submit

    monkeypatch.setattr(kfp, "Client", FakeClient)
    FakeClient.calls = []
    out = submit(load_config(), "http://localhost:8081")
    assert out["run_id"] == "run-1" and out["url"] == "http://localhost:8081/#/runs/details/run-1"
    kind, name, arguments, caching = FakeClient.calls[-1]
    assert (kind, name, caching) == ("run", "servicetime-cluster", False)
    assert arguments["data_root"] == f"s3://{platform().buckets.data}"
    assert arguments["run_uri"].startswith(f"s3://{platform().buckets.artifacts}/runs/")
    assert '"backend":"kuberay"' in arguments["config_json"]
    rec = submit(load_config(), "http://localhost:8081", recurring_cron="0 0 6 * * 1")
    assert rec["recurring_run_id"] == "rec-1" and FakeClient.calls[-1][:2] == ("recurring", "0 0 6 * * 1")
