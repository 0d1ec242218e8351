"""Our patches to KFP's install: KFP keeps its own SeaweedFS, but stores everything in our MinIO."""

from __future__ import annotations

from components.cluster import podspec
from components.core.platform import platform
from components.render.cluster import S3_REGION, dump


def kfp_patches() -> dict[str, dict]:
    """KFP keeps its own SeaweedFS but stores everything in our MinIO.

    Four readers of the object store: the API server (pipeline specs), the v2
    launcher (artifacts, via ``kfp-launcher``), Argo (logs, via its artifact
    repository) and the UI (archived logs, via ``MINIO_*``). Credentials come from
    the ``s3-credentials`` Secret the bootstrap creates in the KFP namespace.
    """
    p = platform()
    host = f"{podspec.MINIO_SERVICE}.{p.namespace}.svc.cluster.local"
    endpoint = f"{host}:{p.ports.s3}"
    root = f"s3://{p.buckets.kfp}/v2/artifacts"
    secret = podspec.S3_SECRET

    def secret_env(name: str, key: str) -> dict:
        return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}

    providers = {
        "s3": {
            "default": {
                "endpoint": endpoint,
                "disableSSL": True,
                "region": S3_REGION,
                "forcePathStyle": True,
                "credentials": {
                    "fromEnv": False,
                    "secretRef": {
                        "secretName": secret,
                        "accessKeyKey": "AWS_ACCESS_KEY_ID",
                        "secretKeyKey": "AWS_SECRET_ACCESS_KEY",
                    },
                },
            }
        }
    }
    artifact_repository = {
        "archiveLogs": True,
        "s3": {
            "endpoint": endpoint,
            "bucket": p.buckets.kfp,
            "region": S3_REGION,
            "insecure": True,
            "keyFormat": (
                "private-artifacts/{{workflow.namespace}}/{{workflow.name}}/{{workflow.creationTimestamp.Y}}/"
                "{{workflow.creationTimestamp.m}}/{{workflow.creationTimestamp.d}}/{{pod.name}}"
            ),
            "accessKeySecret": {"name": secret, "key": "accesskey"},
            "secretKeySecret": {"name": secret, "key": "secretkey"},
        },
    }

    def deployment(name: str, container: str, env: list[dict]) -> dict:
        # The selector repeats upstream's (immutable) one so the patch is a whole object.
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "selector": {"matchLabels": {"app": name}},
                "template": {"spec": {"containers": [{"name": container, "env": env}]}},
            },
        }

    return {
        "pipeline-install-config.yaml": {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "pipeline-install-config"},
            "data": {"bucketName": p.buckets.kfp, "defaultPipelineRoot": root},
        },
        "kfp-launcher.yaml": {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "kfp-launcher"},
            "data": {"defaultPipelineRoot": root, "providers": dump(providers)},
        },
        "workflow-controller-configmap.yaml": {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "workflow-controller-configmap"},
            "data": {"artifactRepository": dump(artifact_repository)},
        },
        "ml-pipeline-apiserver.yaml": deployment(
            "ml-pipeline",
            "ml-pipeline-api-server",
            [
                {"name": "OBJECTSTORECONFIG_HOST", "value": host},
                {"name": "OBJECTSTORECONFIG_PORT", "value": str(p.ports.s3)},
                {"name": "OBJECTSTORECONFIG_SECURE", "value": "false"},
                {"name": "OBJECTSTORECONFIG_REGION", "value": S3_REGION},
                secret_env("OBJECTSTORECONFIG_ACCESSKEY", "accesskey"),
                secret_env("OBJECTSTORECONFIG_SECRETACCESSKEY", "secretkey"),
            ],
        ),
        "ml-pipeline-ui.yaml": deployment(
            "ml-pipeline-ui",
            "ml-pipeline-ui",
            [
                # The UI dials MINIO_HOST.MINIO_NAMESPACE; MINIO_NAMESPACE stays the KFP
                # namespace, where minio-external (below) points at our MinIO.
                {"name": "MINIO_HOST", "value": "minio-external"},
                {"name": "MINIO_PORT", "value": str(p.ports.s3)},
                {"name": "MINIO_SSL", "value": "false"},
                {"name": "ARGO_ARCHIVE_BUCKETNAME", "value": p.buckets.kfp},
                secret_env("MINIO_ACCESS_KEY", "accesskey"),
                secret_env("MINIO_SECRET_KEY", "secretkey"),
                secret_env("AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),
                secret_env("AWS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
            ],
        ),
    }


def kfp_resources() -> dict[str, dict]:
    return {
        "minio-external.yaml": {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "minio-external"},
            "spec": {
                "type": "ExternalName",
                "externalName": f"{podspec.MINIO_SERVICE}.{platform().namespace}.svc.cluster.local",
            },
        }
    }
