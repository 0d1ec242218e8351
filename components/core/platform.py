"""Platform facts shared by Python, Terraform and the manifests.

The values live in ``platform.yaml`` beside this module; Terraform reads the same
file with ``yamldecode`` and the Kubernetes manifests are rendered from it, so a
port or the image tag is written down exactly once.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict

PLATFORM_FILE = Path(__file__).with_name("platform.yaml")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Image(_Strict):
    repository: str
    tag: str

    @property
    def ref(self) -> str:
        return f"{self.repository}:{self.tag}"


class Ports(_Strict):
    model_server: int
    mlflow: int
    s3: int
    s3_console: int
    prometheus: int
    grafana: int
    kfp_ui: int
    registry: int
    ray_dashboard: int
    postgres: int


class Buckets(_Strict):
    data: str
    artifacts: str
    kfp: str


class Versions(_Strict):
    k3s: str
    kfp: str
    argo: str
    kuberay: str
    minio: str
    minio_mc: str
    postgres: str
    prometheus: str
    grafana: str
    registry: str
    buildkit: str
    busybox: str


class Upstream(_Strict):
    repo: str
    commit: str
    paths: list[str]


class Namespaces(_Strict):
    kfp: str
    kuberay: str


class State(_Strict):
    host_path: str
    node_label: str


class Platform(_Strict):
    image: Image
    ports: Ports
    buckets: Buckets
    model_name: str
    namespace: str
    versions: Versions
    upstream: dict[str, Upstream]
    namespaces: Namespaces
    state: State


@lru_cache(maxsize=1)
def platform() -> Platform:
    """The parsed platform facts (read once, on first use)."""
    return Platform.model_validate(yaml.safe_load(PLATFORM_FILE.read_text()))


# On the cluster, under the data bucket, beside the weekly batches they are joined with: the model
# servers' prediction log (their S3 user may append to it) and the online reports (they may read them).
PREDICTIONS_PREFIX = "predictions"
MONITOR_PREFIX = "monitor"
HISTORY_PREFIX = "history"  # the customer-history snapshots the validate step writes (they may read them)


def cluster_prediction_log_uri() -> str:
    return f"s3://{platform().buckets.data}/{PREDICTIONS_PREFIX}"


def cluster_report_uri() -> str:
    return f"s3://{platform().buckets.data}/{MONITOR_PREFIX}"


def cluster_history_uri() -> str:
    return f"s3://{platform().buckets.data}/{HISTORY_PREFIX}"
