"""Egress NetworkPolicies: what each pod may call, and nothing on the nodes or the metadata service.

Every namespace the install creates starts from "no egress"; then each workload of
ours gets exactly the flows it needs (DNS, the stores, MLflow, the API server for
the pods that call it, Ray among its own pods). The upstream namespaces (KFP,
KubeRay's operator) keep open egress to pods and to the internet, but, like ours,
never to the cloud metadata service (169.254.169.254, whose user-data is the
node's) nor to node addresses other than the API server's port.

Facts that shape these policies, in one place:

- Policies are enforced after kube-proxy's DNAT, so a call to a Service is a call
  to its backend pods (a pod peer), and a call to ``kubernetes.default`` is a call
  to a node address on the API server port (an ipBlock peer).
- k3s's CoreDNS pods carry ``k8s-app: kube-dns`` in ``kube-system``.
- Node addresses are in private ranges (Terraform's ``private_cidr`` is one), so
  "no node address" is "no private range" for ipBlock peers; pods themselves are
  pod peers, never matched by these blocks.
"""

from __future__ import annotations

from components.cluster import podspec
from components.core.platform import platform

METADATA_IP = "169.254.169.254"
LINK_LOCAL = "169.254.0.0/16"
# Where node addresses live (RFC 1918 and the shared CGNAT range): never an egress target but for the API.
PRIVATE_RANGES = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10")
API_SERVER_PORT = 6443  # k3s's kube-apiserver on the server nodes (kubernetes.default DNATs here)
DNS_NAMESPACE = "kube-system"
DNS_LABELS = {"k8s-app": "kube-dns"}
DNS_PORT = 53
NAME = "app.kubernetes.io/name"


def _policy(name: str, selector: dict, egress: list[dict], namespace: str | None = None) -> dict:
    meta: dict = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta,
            "spec": {"podSelector": selector, "policyTypes": ["Egress"], "egress": egress}}


def _named(app: str) -> dict:
    return {"matchLabels": {NAME: app}}


def _to_pods(app: str, port: str | int | None, namespace: str | None = None) -> dict:
    """A rule to the pods named ``app`` (our namespace unless given) on one port (all when None)."""
    peer: dict = {"podSelector": _named(app)}
    if namespace:
        peer["namespaceSelector"] = {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
    rule: dict = {"to": [peer]}
    if port is not None:
        rule["ports"] = [{"port": port, "protocol": "TCP"}]
    return rule


def dns_rule() -> dict:
    return {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": DNS_NAMESPACE}},
                    "podSelector": {"matchLabels": dict(DNS_LABELS)}}],
            "ports": [{"port": DNS_PORT, "protocol": "UDP"}, {"port": DNS_PORT, "protocol": "TCP"}]}


def api_server_rule() -> dict:
    """The API server on a node address: that port only, in the private ranges nodes live in."""
    return {"to": [{"ipBlock": {"cidr": cidr}} for cidr in PRIVATE_RANGES],
            "ports": [{"port": API_SERVER_PORT, "protocol": "TCP"}]}


def internet_rule() -> dict:
    """Public addresses only: no node, no metadata service."""
    return {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": [LINK_LOCAL, *PRIVATE_RANGES]}}]}


def baseline(namespace: str | None = None) -> list[dict]:
    """Deny all egress, then DNS for every pod: the start of every namespace of ours."""
    return [_policy("default-deny-egress", {}, [], namespace), _policy("dns-egress", {}, [dns_rule()], namespace)]


def platform_policies() -> list[dict]:
    """Our namespace: one policy per workload, naming each flow it needs."""
    ray = {"matchLabels": {NAME: "ray"}}
    ray_nodes = {"podSelector": {"matchLabels": {"ray.io/is-ray-node": "yes"}}}
    return baseline() + [
        _policy("mlflow-egress", _named(podspec.MLFLOW_SERVICE),
                [_to_pods("postgres", "postgres"), _to_pods(podspec.MINIO_SERVICE, "s3")]),
        _policy("model-server-egress", _named("model-server"),
                [_to_pods(podspec.MLFLOW_SERVICE, "http"), _to_pods(podspec.MINIO_SERVICE, "s3")]),
        # Head, workers and submitter: each other on any port (GCS, object store, workers' ports),
        # MLflow and the store. They never call the API (their service account has no token).
        _policy("ray-egress", ray,
                [{"to": [ray_nodes, {"podSelector": ray}]}, _to_pods(podspec.MLFLOW_SERVICE, "http"),
                 _to_pods(podspec.MINIO_SERVICE, "s3")]),
        _policy("minio-setup-egress", _named("minio-setup"), [_to_pods(podspec.MINIO_SERVICE, "s3")]),
        # Prometheus finds the model server's pods through the API (kubernetes_sd) and scrapes them.
        _policy("prometheus-egress", _named(podspec.PROMETHEUS_SERVICE),
                [_to_pods("model-server", "http"), api_server_rule()]),
        _policy("grafana-egress", _named("grafana"), [_to_pods(podspec.PROMETHEUS_SERVICE, "http")]),
        # MinIO and Postgres call no one: the baseline (DNS) is all they get.
    ]


def registry_policies() -> list[dict]:
    """The registry serves pushes and pulls; it mirrors nothing, so it calls no one."""
    return baseline()


def upstream_policies(namespace: str) -> list[dict]:
    """KFP's and KubeRay's namespaces: every pod and the internet stay open; nodes and metadata do not.

    Their components (and KFP's pipeline pods, whose images may install packages) are
    not ours to narrow flow by flow; the doors that matter are closed for all of them.
    """
    return [_policy("egress-no-metadata-no-nodes", {},
                    [{"to": [{"namespaceSelector": {}}]}, internet_rule(), api_server_rule()], namespace)]


def kfp_policies() -> list[dict]:
    return upstream_policies(platform().namespaces.kfp)


def kuberay_policies() -> list[dict]:
    return upstream_policies(platform().namespaces.kuberay)
