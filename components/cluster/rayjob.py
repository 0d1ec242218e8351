"""Training on KubeRay: build a RayJob for our image and run it to completion.

A pipeline step calls ``run_rayjob(build_rayjob(...), namespace, timeout_s)``. The
RayJob brings up its own Ray cluster (one head, one worker group), submits the
entrypoint from a submitter pod (K8sJobMode), and tears the cluster down when the
job ends. ``run_rayjob`` waits for that, returns the driver log and deletes the
RayJob; on failure or timeout it raises with the log attached.
"""

from __future__ import annotations

import logging
import shlex
import time
from typing import Any, Callable

from components.cluster import podspec, s3_users
from components.cluster.kube import kube_apis
from components.core.platform import platform

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "ray.io", "v1", "rayjobs"
RAY_SERVICE_ACCOUNT = "ray-job"  # no API token: Ray pods never call Kubernetes
# run_rayjob deletes the RayJob itself; these two clean up when its caller is gone.
TTL_AFTER_FINISHED_S = 120
HEAD_CPU, HEAD_MEMORY = "1", "2Gi"
SUCCEEDED = {"SUCCEEDED"}
FAILED = {"FAILED", "STOPPED"}


def _cpu(cores: float) -> str:
    return f"{round(cores * 1000)}m"


def _ray_container(name: str, image: str, env: list[dict], cpu: str, memory: str, ports: list[dict]) -> dict:
    container = {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "env": env,
        # Ray sizes itself from the limits; requests equal limits so it gets them.
        "resources": podspec.resources(cpu, memory, cpu, memory),
        "securityContext": podspec.container_security_context(),
        "volumeMounts": [
            {"name": "tmp", "mountPath": "/tmp"},  # Ray session dirs, HOME
            {"name": "dshm", "mountPath": "/dev/shm"},  # the object store
        ],
    }
    if ports:
        container["ports"] = ports
    return container


def _pod_template(container: dict, labels: dict, shm: str) -> dict:
    return {
        "metadata": {"labels": labels},
        "spec": {
            "serviceAccountName": RAY_SERVICE_ACCOUNT,
            "automountServiceAccountToken": False,
            "securityContext": podspec.pod_security_context(),
            "containers": [container],
            "volumes": [
                {"name": "tmp", "emptyDir": {"sizeLimit": "8Gi"}},
                {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shm}},
            ],
        },
    }


def build_rayjob(
    name: str,
    entrypoint: list[str],
    num_workers: int,
    cpus_per_worker: float,
    memory: str,
    env: dict[str, str],
    image: str | None = None,
    active_deadline_s: int | None = None,
) -> dict:
    """A ray.io/v1 RayJob running ``entrypoint`` on a fresh head + ``num_workers`` workers.

    ``active_deadline_s`` makes KubeRay stop the job after that long even if no one
    is waiting for it any more (pass the caller's timeout).
    """
    if num_workers < 1:
        raise ValueError("num_workers must be at least 1")
    p = platform()
    image = image or p.image.ref
    # Caller's env wins over the platform defaults (endpoints, HOME, secret refs).
    given = [{"name": k, "value": str(v)} for k, v in sorted(env.items())]
    platform_env = podspec.platform_env(s3_secret=s3_users.users()["ray"].secret)  # checkpoints, inputs, result
    full_env = [e for e in platform_env if e["name"] not in env] + given
    labels = {"app.kubernetes.io/name": "ray", "servicetime.io/rayjob": name, **podspec.PART_OF}

    head = _ray_container(
        "ray-head",
        image,
        full_env,
        HEAD_CPU,
        HEAD_MEMORY,
        [
            {"name": "gcs", "containerPort": 6379},
            {"name": "dashboard", "containerPort": p.ports.ray_dashboard},
            {"name": "client", "containerPort": 10001},
        ],
    )
    worker = _ray_container("ray-worker", image, full_env, _cpu(cpus_per_worker), memory, [])
    submitter = {
        "name": "ray-job-submitter",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "env": [{"name": "HOME", "value": "/tmp"}],
        "resources": podspec.resources("100m", "256Mi", "500m", "512Mi"),
        "securityContext": podspec.container_security_context(),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    submitter_template = {
        "metadata": {"labels": labels},
        "spec": {
            "restartPolicy": "Never",
            "serviceAccountName": RAY_SERVICE_ACCOUNT,
            "automountServiceAccountToken": False,
            "securityContext": podspec.pod_security_context(),
            # No command: KubeRay fills in `ray job submit ...` for this container.
            "containers": [submitter],
            "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}],
        },
    }
    deadline = {"activeDeadlineSeconds": int(active_deadline_s)} if active_deadline_s else {}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "RayJob",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            **deadline,
            "entrypoint": shlex.join(entrypoint),
            "submissionMode": "K8sJobMode",
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": TTL_AFTER_FINISHED_S,
            "backoffLimit": 0,  # retries belong to the pipeline, which knows about checkpoints
            "submitterPodTemplate": submitter_template,
            "rayClusterSpec": {
                "headGroupSpec": {
                    # num-cpus 0: training tasks go to workers; the head runs only the driver.
                    "rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "0"},
                    "template": _pod_template(head, labels, "1Gi"),
                },
                "workerGroupSpecs": [
                    {
                        "groupName": "workers",
                        "replicas": num_workers,
                        "minReplicas": num_workers,
                        "maxReplicas": num_workers,
                        "rayStartParams": {},
                        "template": _pod_template(worker, labels, memory),
                    }
                ],
            },
        },
    }


# --- running -----------------------------------------------------------------


def _status_code(exc: Exception) -> int | None:
    return getattr(exc, "status", None)


def _items(obj: Any) -> list:
    return obj["items"] if isinstance(obj, dict) else list(obj.items or [])


def _pod_name(pod: Any) -> str:
    return pod["metadata"]["name"] if isinstance(pod, dict) else pod.metadata.name


def driver_logs(core_api, name: str, namespace: str, tail_lines: int = 2000) -> str:
    """The submitter pod's log: `ray job submit` follows and prints the driver output."""
    pods = _items(core_api.list_namespaced_pod(namespace, label_selector=f"job-name={name}"))
    if not pods:
        return ""
    pod = _pod_name(pods[-1])
    return core_api.read_namespaced_pod_log(pod, namespace, tail_lines=tail_lines)


def run_rayjob(
    manifest: dict,
    namespace: str,
    timeout_s: float,
    api=None,
    core_api=None,
    *,
    poll_s: float = 10.0,
    delete: bool = True,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict:
    """Create the RayJob, wait for it to finish, collect the driver log, delete it.

    Returns ``{"name", "job_status", "deployment_status", "logs", "duration_s", "status"}``;
    raises ``RuntimeError`` (with the log tail) on failure or after ``timeout_s``.
    """
    if api is None or core_api is None:
        default_api, default_core = kube_apis("CustomObjectsApi", "CoreV1Api")
        api, core_api = api or default_api, core_api or default_core
    name = manifest["metadata"]["name"]
    args = (GROUP, VERSION, namespace, PLURAL)

    try:
        api.create_namespaced_custom_object(*args, manifest)
    except Exception as exc:
        if _status_code(exc) != 409:
            raise
        # A leftover from an interrupted attempt: replace it rather than adopt it.
        log.warning("RayJob %s exists; deleting it and starting again", name)
        api.delete_namespaced_custom_object(*args, name)
        sleep(poll_s)
        api.create_namespaced_custom_object(*args, manifest)
    log.info("RayJob %s/%s created", namespace, name)

    start = clock()
    last: tuple = ()
    status: dict = {}
    outcome = "timeout"
    try:
        while True:
            obj = api.get_namespaced_custom_object(*args, name)
            status = obj.get("status") or {}
            job, deployment = status.get("jobStatus", ""), status.get("jobDeploymentStatus", "")
            elapsed = clock() - start
            if (job, deployment) != last:
                log.info("RayJob %s: job=%s deployment=%s (%.0fs)", name, job or "-", deployment or "-", elapsed)
                last = (job, deployment)
            if job in SUCCEEDED:
                outcome = "succeeded"
                break
            if job in FAILED or deployment == "Failed":
                outcome = "failed"
                break
            if elapsed >= timeout_s:
                break
            sleep(poll_s)
        try:
            logs = driver_logs(core_api, name, namespace)
        except Exception as exc:  # the log is a courtesy; the outcome stands without it
            logs = ""
            log.warning("could not read driver logs of %s: %s", name, exc)
    finally:
        if delete:
            try:
                api.delete_namespaced_custom_object(*args, name)
            except Exception as exc:
                if _status_code(exc) != 404:
                    log.warning("could not delete RayJob %s: %s", name, exc)

    result = {
        "name": name,
        "job_status": status.get("jobStatus", ""),
        "deployment_status": status.get("jobDeploymentStatus", ""),
        "logs": logs,
        "duration_s": clock() - start,
        "status": status,
    }
    if outcome == "succeeded":
        return result
    tail = "\n".join(logs.splitlines()[-50:])
    if outcome == "timeout":
        raise RuntimeError(f"RayJob {name} did not finish within {timeout_s:.0f}s (status {status}).\n{tail}")
    detail = status.get("message") or status.get("reason") or ""
    raise RuntimeError(
        f"RayJob {name} failed: job={result['job_status']} deployment={result['deployment_status']} "
        f"{detail}\n{tail}"
    )
