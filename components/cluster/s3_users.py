"""The in-cluster S3 (MinIO) users: one per workload, each with the least it needs.

``minio-setup`` creates each user from its Secret (made by infra/bootstrap.sh) and
attaches the policy written here, rendered into the ``s3-policies`` ConfigMap. The
pods mount their own user's Secret only. The tests evaluate these documents: the
model server's user cannot write anywhere.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from components.core.platform import HISTORY_PREFIX, MONITOR_PREFIX, PREDICTIONS_PREFIX, platform

READ = ["s3:GetObject"]
WRITE = ["s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"]
LIST = ["s3:ListBucket", "s3:GetBucketLocation", "s3:ListBucketMultipartUploads"]
POLICY_CONFIGMAP = "s3-policies"
CHECKPOINTS_PREFIX = "checkpoints"  # components/cluster/train_job.py's default under the artifacts bucket
TRAIN_INPUTS_PREFIX = "train-inputs"  # where pipeline steps hand a RayJob its features, config and result


@dataclass(frozen=True)
class S3User:
    secret: str  # Secret with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and accesskey/secretkey for KFP)
    policy: str  # MinIO policy name (also the JSON file's stem in the ConfigMap)
    read: tuple[str, ...]  # "bucket" or "bucket/prefix"
    write: tuple[str, ...]


def users() -> dict[str, S3User]:
    b = platform().buckets
    return {
        # Pipeline steps and KFP itself (its API server, launcher, Argo logs): data, artifacts, KFP's bucket.
        "pipeline": S3User("s3-credentials", "servicetime-pipeline", (b.data, b.artifacts, b.kfp),
                           (b.data, b.artifacts, b.kfp)),
        # MLflow proxies every artifact upload and download: the artifacts bucket.
        "mlflow": S3User("s3-mlflow", "servicetime-mlflow", (b.artifacts,), (b.artifacts,)),
        # Ray reads what the pipeline handed it and writes checkpoints and the result beside them.
        "ray": S3User("s3-ray", "servicetime-ray", (f"{b.artifacts}/{TRAIN_INPUTS_PREFIX}",
                                                   f"{b.artifacts}/{CHECKPOINTS_PREFIX}"),
                      (f"{b.artifacts}/{TRAIN_INPUTS_PREFIX}", f"{b.artifacts}/{CHECKPOINTS_PREFIX}")),
        # The model server loads models, the newest customer history and the latest online report, and
        # appends to its prediction log.
        "model-server": S3User("s3-model-server", "servicetime-model-server",
                               (b.artifacts, f"{b.data}/{HISTORY_PREFIX}", f"{b.data}/{MONITOR_PREFIX}"),
                               (f"{b.data}/{PREDICTIONS_PREFIX}",)),
    }


def _split(path: str) -> tuple[str, str]:
    bucket, _, prefix = path.partition("/")
    return bucket, prefix


def _objects(paths: tuple[str, ...]) -> list[str]:
    return [f"arn:aws:s3:::{b}/{p + '/' if p else ''}*" for b, p in map(_split, paths)]


def policy_document(user: S3User) -> dict:
    """An IAM-style policy MinIO accepts: list the buckets read, get objects read, put/delete objects written."""
    buckets = sorted({_split(p)[0] for p in user.read + user.write})
    statements = [{"Effect": "Allow", "Action": LIST, "Resource": [f"arn:aws:s3:::{b}" for b in buckets]},
                  {"Effect": "Allow", "Action": READ, "Resource": _objects(user.read)}]
    if user.write:
        statements.append({"Effect": "Allow", "Action": WRITE, "Resource": _objects(user.write)})
    return {"Version": "2012-10-17", "Statement": statements}


def policy_files() -> dict[str, str]:
    """``<policy>.json`` for the ConfigMap minio-setup reads."""
    return {f"{u.policy}.json": json.dumps(policy_document(u), indent=2) + "\n" for u in users().values()}


def setup_env() -> list[dict]:
    """minio-setup's env: each user's key pair by reference, as <USER>_KEY / <USER>_SECRET."""
    env = []
    for name, user in users().items():
        var = name.upper().replace("-", "_")
        for suffix, key in (("KEY", "AWS_ACCESS_KEY_ID"), ("SECRET", "AWS_SECRET_ACCESS_KEY")):
            env.append({"name": f"{var}_{suffix}", "valueFrom": {"secretKeyRef": {"name": user.secret, "key": key}}})
    return env


def setup_users_line() -> str:
    """``user:policy`` pairs the setup script loops over (env names, not values)."""
    return " ".join(f"{name.upper().replace('-', '_')}:{u.policy}" for name, u in users().items())


def allowed(document: dict, action: str, resource: str) -> bool:
    """Whether ``document`` allows ``action`` on ``resource`` (Allow statements, ``*`` wildcards at the end)."""
    for st in document["Statement"]:
        if st["Effect"] != "Allow":
            continue
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        if not any(a == action or a == "s3:*" or (a.endswith("*") and action.startswith(a[:-1])) for a in actions):
            continue
        resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        if any(r == resource or (r.endswith("*") and resource.startswith(r[:-1])) for r in resources):
            return True
    return False
