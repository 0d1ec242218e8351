"""Pieces every pod we generate shares: hardening, platform env, service URLs.

The manifests in ``k8s/base`` follow the same rules by hand; the tests check both.
"""

from __future__ import annotations

from components.platform import platform

APP_UID = 1000  # the non-root user baked into infra/Dockerfile
S3_SECRET = "s3-credentials"  # created by infra/bootstrap.sh, never committed
MINIO_SERVICE = "minio"
MLFLOW_SERVICE = "mlflow"
PROMETHEUS_SERVICE = "prometheus"
PART_OF = {"app.kubernetes.io/part-of": "servicetime"}


def service_url(service: str, port: int, namespace: str | None = None) -> str:
    host = f"{service}.{namespace}" if namespace else service
    return f"http://{host}:{port}"


def pod_security_context() -> dict:
    return {
        "runAsNonRoot": True,
        "runAsUser": APP_UID,
        "runAsGroup": APP_UID,
        "fsGroup": APP_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context(read_only_root: bool = True) -> dict:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": read_only_root,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def resources(cpu_request: str, memory_request: str, cpu_limit: str, memory_limit: str) -> dict:
    return {
        "requests": {"cpu": cpu_request, "memory": memory_request},
        "limits": {"cpu": cpu_limit, "memory": memory_limit},
    }


def platform_env(namespace: str | None = None) -> list[dict]:
    """Env for any pod of ours that talks to MLflow and MinIO (secrets by reference)."""
    p = platform()
    s3 = service_url(MINIO_SERVICE, p.ports.s3, namespace)
    env = [
        {"name": "MLFLOW_TRACKING_URI", "value": service_url(MLFLOW_SERVICE, p.ports.mlflow, namespace)},
        {"name": "MLFLOW_S3_ENDPOINT_URL", "value": s3},
        {"name": "AWS_ENDPOINT_URL", "value": s3},
        {"name": "AWS_DEFAULT_REGION", "value": "us-east-1"},  # MinIO's default region
        {"name": "MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK", "value": "true"},
        {"name": "HOME", "value": "/tmp"},  # root filesystem is read-only
    ]
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        env.append({"name": key, "valueFrom": {"secretKeyRef": {"name": S3_SECRET, "key": key}}})
    return env


def tmp_volume(size: str = "1Gi") -> tuple[dict, dict]:
    """An emptyDir at /tmp: the only place our image writes."""
    return (
        {"name": "tmp", "emptyDir": {"sizeLimit": size}},
        {"name": "tmp", "mountPath": "/tmp"},
    )
