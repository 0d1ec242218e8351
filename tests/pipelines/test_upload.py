"""The pipeline waiting in the KFP dashboard: upload against the real client's API shape, and the
compiled package's defaults (what *Create run* starts with)."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import kfp
import kfp_server_api as api
import pytest
import yaml

from components.core.config import load_config
from components.core.platform import platform
from pipelines import submit
from pipelines.run_uri import resolve

REPO = Path(__file__).resolve().parents[2]
REAL_CLIENT = kfp.Client  # kept: a test below replaces kfp.Client in a child process


class RecordingClient:
    """Stands in for kfp.Client: checks every call binds to the real method's signature, records it,
    and answers with the real kfp_server_api models."""

    def __init__(self):
        self.calls: list[tuple[str, dict]] = []
        self.pipelines: dict[str, str] = {}
        self.versions: dict[str, list] = {}
        self.packages: list[dict] = []

    def _record(self, name, *args, **kwargs):
        bound = inspect.signature(getattr(REAL_CLIENT, name)).bind(self, *args, **kwargs)
        self.calls.append((name, dict(list(bound.arguments.items())[1:])))
        return bound.arguments

    def get_pipeline_id(self, name):
        self._record("get_pipeline_id", name)
        return self.pipelines.get(name)

    def upload_pipeline(self, pipeline_package_path, pipeline_name=None, description=None, namespace=None):
        self._record("upload_pipeline", pipeline_package_path, pipeline_name=pipeline_name, description=description)
        self.packages.append(next(yaml.safe_load_all(Path(pipeline_package_path).read_text())))
        pid = f"p-{len(self.pipelines) + 1}"
        self.pipelines[pipeline_name] = pid
        # KFP makes a first version named like the pipeline on upload_pipeline.
        self.versions[pid] = [api.V2beta1PipelineVersion(pipeline_id=pid, pipeline_version_id=f"{pid}-v0",
                                                         display_name=pipeline_name)]
        return api.V2beta1Pipeline(pipeline_id=pid, display_name=pipeline_name)

    def list_pipeline_versions(self, pipeline_id, page_token="", page_size=10, sort_by="", filter=None):
        self._record("list_pipeline_versions", pipeline_id, page_size=page_size)
        return api.V2beta1ListPipelineVersionsResponse(pipeline_versions=list(self.versions[pipeline_id]),
                                                       total_size=len(self.versions[pipeline_id]))

    def upload_pipeline_version(self, pipeline_package_path, pipeline_version_name, pipeline_id=None,
                                pipeline_name=None, description=None):
        self._record("upload_pipeline_version", pipeline_package_path, pipeline_version_name,
                     pipeline_id=pipeline_id, description=description)
        self.packages.append(next(yaml.safe_load_all(Path(pipeline_package_path).read_text())))
        version = api.V2beta1PipelineVersion(pipeline_id=pipeline_id, display_name=pipeline_version_name,
                                             pipeline_version_id=f"{pipeline_id}-v{len(self.versions[pipeline_id])}")
        self.versions[pipeline_id].append(version)
        return version

    def create_experiment(self, name, description=None, namespace=None):
        self._record("create_experiment", name, namespace=namespace)
        return api.V2beta1Experiment(experiment_id="e-1", display_name=name)

    def create_recurring_run(self, experiment_id, job_name, **kwargs):
        self._record("create_recurring_run", experiment_id, job_name, **kwargs)
        self.made = getattr(self, "made", 0) + 1
        self.recurring = [*getattr(self, "recurring", []), api.V2beta1RecurringRun(
            recurring_run_id=f"r-{self.made}", display_name=job_name,
            pipeline_version_reference=api.V2beta1PipelineVersionReference(
                pipeline_id=kwargs["pipeline_id"], pipeline_version_id=kwargs["version_id"]),
            trigger=api.V2beta1Trigger(cron_schedule=api.V2beta1CronSchedule(cron=kwargs["cron_expression"])))]
        return self.recurring[-1]

    def list_recurring_runs(self, page_token="", page_size=10, sort_by="", experiment_id=None, namespace=None,
                            filter=None):
        self._record("list_recurring_runs", page_size=page_size, experiment_id=experiment_id)
        return api.V2beta1ListRecurringRunsResponse(recurring_runs=list(getattr(self, "recurring", [])))

    def delete_recurring_run(self, recurring_run_id):
        self._record("delete_recurring_run", recurring_run_id)
        self.recurring = [r for r in self.recurring if r.recurring_run_id != recurring_run_id]
        return {}


def names(client):
    return [c[0] for c in client.calls]


def test_upload_creates_pipeline_version_by_commit_and_experiment():
    client = RecordingClient()
    out = submit.upload(load_config(), "http://localhost:8081", version="abc123def456", client=client)
    assert out["uploaded"] and out["version"] == "abc123def456" and out["experiment_id"] == "e-1"
    assert names(client) == ["get_pipeline_id", "upload_pipeline", "list_pipeline_versions",
                             "upload_pipeline_version", "create_experiment"]
    assert client.calls[1][1]["pipeline_name"] == submit.UPLOAD_NAME
    assert "create_recurring_run" not in names(client)  # off by default


def test_upload_is_idempotent_per_commit_and_adds_a_version_per_new_commit():
    client = RecordingClient()
    cfg = load_config()
    submit.upload(cfg, "h", version="aaa", client=client)
    again = submit.upload(cfg, "h", version="aaa", client=client)
    assert not again["uploaded"] and names(client).count("upload_pipeline_version") == 1
    newer = submit.upload(cfg, "h", version="bbb", client=client)
    assert newer["uploaded"] and names(client).count("upload_pipeline") == 1
    assert [v.display_name for v in client.versions[newer["pipeline_id"]]][-2:] == ["aaa", "bbb"]


def test_weekly_recurring_run_is_of_the_uploaded_version():
    client = RecordingClient()
    out = submit.upload(load_config(), "h", version="ccc", recurring_cron="0 0 6 * * 1", client=client)
    call = dict(client.calls)["create_recurring_run"]
    assert call["version_id"] == out["version_id"] and call["pipeline_id"] == out["pipeline_id"]
    assert call["cron_expression"] == "0 0 6 * * 1" and out["recurring_run_id"] == "r-1"
    # The bootstrap again: the same run kept; a new commit: the weekly run moves to the new version.
    again = submit.upload(load_config(), "h", version="ccc", recurring_cron="0 0 6 * * 1", client=client)
    assert again["recurring_run_id"] == "r-1" and len(client.recurring) == 1
    newer = submit.upload(load_config(), "h", version="ddd", recurring_cron="0 0 6 * * 1", client=client)
    assert [r.recurring_run_id for r in client.recurring] == [newer["recurring_run_id"]] != ["r-1"]
    assert client.recurring[0].pipeline_version_reference.pipeline_version_id == newer["version_id"]


def test_the_monitor_pipeline_reads_the_log_and_writes_the_reports_where_the_servers_do():
    from components.core.platform import cluster_prediction_log_uri, cluster_report_uri

    client = RecordingClient()
    out = submit.upload(load_config(), "h", version="eee", recurring_cron="0 0 7 * * 1", client=client,
                        kind="monitor")
    assert client.pipelines == {"servicetime-monitor": out["pipeline_id"]} and out["recurring_run_id"]
    params = client.packages[-1]["root"]["inputDefinitions"]["parameters"]
    assert params["log_uri"]["defaultValue"] == cluster_prediction_log_uri()
    assert params["report_uri"]["defaultValue"] == cluster_report_uri()
    assert json.loads(params["config_json"]["defaultValue"])["tracking"]["tracking_uri"].startswith("http://mlflow.")


def test_the_uploaded_package_starts_a_real_cluster_run_with_its_defaults():
    """Create run, changing nothing: the cluster's data, a run folder per job, the KubeRay/Kubernetes config."""
    client = RecordingClient()
    submit.upload(load_config(), "h", version="ddd", client=client)
    spec = client.packages[-1]
    params = spec["root"]["inputDefinitions"]["parameters"]
    p = platform()
    assert params["data_root"]["defaultValue"] == f"s3://{p.buckets.data}"
    assert params["run_uri"]["defaultValue"] == f"s3://{p.buckets.artifacts}/runs/"
    assert params["simulate_if_empty"]["defaultValue"] is True  # a fresh cluster's empty bucket is filled
    cfg = json.loads(params["config_json"]["defaultValue"])
    assert cfg["train"]["backend"] == "kuberay" and cfg["deploy"]["backend"] == "kubernetes"
    assert all("defaultValue" in v for v in params.values())  # nothing for the user to type
    # Every task receives the job id that names its run folder.
    for task in spec["root"]["dag"]["tasks"].values():
        if "job_id" in task.get("inputs", {}).get("parameters", {}):
            assert task["inputs"]["parameters"]["job_id"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"


def test_run_uri_folder_is_resolved_per_job():
    assert resolve("s3://a/runs/", "1234-abcd") == "s3://a/runs/1234-abcd"
    assert resolve("s3://a/runs/r1", "1234") == "s3://a/runs/r1"
    with pytest.raises(ValueError, match="no job id"):
        resolve("s3://a/runs/", "{{$.pipeline_job_uuid}}")


@pytest.mark.slow
def test_the_local_runner_fills_the_job_id(tmp_path):
    """The placeholder the uploaded pipeline relies on is substituted by the runner (here the local one)."""
    script = f"""
from kfp import dsl, local
local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root={str(tmp_path / 'root')!r})

@dsl.component(base_image="python:3.11", install_kfp_package=False)
def where(run_uri: str, job_id: str) -> str:
    from pipelines.run_uri import resolve
    return resolve(run_uri, job_id)

@dsl.pipeline
def p(run_uri: str = "/tmp/runs/") -> str:
    return where(run_uri=run_uri, job_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER).output

print("RESULT", p().output)
"""
    (tmp_path / "job_id_pipeline.py").write_text(script)  # KFP reads a component's source from its file
    proc = subprocess.run([sys.executable, str(tmp_path / "job_id_pipeline.py")], capture_output=True, text=True,
                          cwd=REPO, timeout=120, env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT")).split()[1]
    assert result.startswith("/tmp/runs/") and len(result) > len("/tmp/runs/") + 4 and "{{" not in result


def test_upload_needs_only_a_light_environment(tmp_path):
    """The bootstrap uploads from its small venv: kfp, PyYAML, pydantic; no torch, Ray, MLflow, pandas."""
    script = """
import sys
for m in ("torch", "ray", "mlflow", "pandas", "numpy", "pyarrow", "fastapi"):
    sys.modules[m] = None
import kfp
from tests.pipelines.test_upload import RecordingClient
client = RecordingClient()
kfp.Client = lambda host, namespace=None: client
from components.cli.main import main
main(["submit", "--upload", "--host", "http://127.0.0.1:8081", "--version", "light"])
main(["submit", "--upload", "--plan", "--host", "http://127.0.0.1:8081", "--version", "light"])
print("CALLS", [c[0] for c in client.calls])
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "upload_pipeline_version" in proc.stdout and '"version": "light"' in proc.stdout
