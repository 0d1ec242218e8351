"""The platform's doors, checked on the whole-install render: egress, Pod Security, secrets.

Egress: no pod reaches the cloud metadata service (its user-data is the node's) or
a node address other than the API server's port, while every flow the platform
needs stays open, with Kubernetes' NetworkPolicy semantics (components.cluster.reachability).
"""

from __future__ import annotations

import pytest

from components.cluster import egress, pod_security
from components.cluster.reachability import Endpoint, Network, Pod
from tests.infra.test_install import (
    KFP_NS,
    KUBERAY_NS,
    NS,
    PIPELINE_POD,
    _pod_specs,
    _via_service,
    pod,
)

METADATA = Endpoint("cloud metadata service", egress.METADATA_IP)
# A node of the default private network (terraform's private_cidr) and of k3d's (the rehearsal).
NODES = [Endpoint("control-plane node", "192.168.1.10"), Endpoint("k3d node", "172.18.0.2"),
         Endpoint("node of a 10/8 network", "10.20.0.5")]
NODE_PORTS = [22, 10250, 2379, 9100, 80]  # sshd, kubelet, etcd, node exporter, anything
INTERNET = Endpoint("a public address", "93.184.216.34")
COREDNS = Pod("CoreDNS", egress.DNS_NAMESPACE, dict(egress.DNS_LABELS), {"dns": 53, "dns-tcp": 53})


def _all_pods(pods: list[Pod]) -> list[Pod]:
    return [*pods, PIPELINE_POD]


def test_every_namespace_of_the_install_has_egress_policies(objects):
    namespaces = {o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"}
    with_egress = {o["metadata"]["namespace"] for o in objects if o["kind"] == "NetworkPolicy"
                   and "Egress" in o["spec"].get("policyTypes", [])}
    assert namespaces == with_egress


def test_no_pod_reaches_the_metadata_service_on_any_port(pods, network):
    reaching = [p.name for p in _all_pods(pods) if network.reaches_any_port(p, METADATA)]
    assert reaching == []


def test_no_pod_reaches_a_node_but_on_the_api_server_port(pods, network):
    reaching = [(p.namespace, p.name, n.ip, port) for p in _all_pods(pods) for n in NODES for port in NODE_PORTS
                if network.allows(p, n, port)]
    assert reaching == []


def test_our_pods_reach_neither_the_internet_nor_the_api_unless_they_need_it(pods, network):
    ours = [p for p in pods if p.namespace in (NS, f"{NS}-registry")]
    assert len(ours) >= 10
    assert [p.name for p in ours if network.reaches_any_port(p, INTERNET)] == []
    api_users = {p.name for p in ours if network.allows(p, NODES[0], egress.API_SERVER_PORT)}
    assert api_users == {"Deployment/prometheus"}  # kubernetes_sd finds the model server's pods


def test_pods_that_call_the_api_reach_it(pods, network):
    callers = [PIPELINE_POD, pod(pods, "Deployment/ml-pipeline", KFP_NS),
               pod(pods, "Deployment/workflow-controller", KFP_NS),
               pod(pods, "Deployment/kuberay-operator", KUBERAY_NS), pod(pods, "Deployment/prometheus", NS)]
    closed = [p.name for p in callers for n in NODES if not network.allows(p, n, egress.API_SERVER_PORT)]
    assert closed == []


def test_every_pod_resolves_names(pods, network):
    blind = [p.name for p in _all_pods(pods) for proto in ("UDP", "TCP")
             if not network.allows(p, COREDNS, 53, proto)]
    assert blind == []


def test_egress_flows_are_narrow_inside_our_namespace(objects, pods, network):
    """Each of ours reaches only what it needs: the model server cannot reach Postgres, Ray cannot reach Grafana."""
    model_server = pod(pods, "Deployment/model-server", NS)
    head = next(p for p in pods if p.name.endswith("/head"))
    assert not _via_service(objects, pods, network, model_server, "postgres", NS, "postgres")
    assert not _via_service(objects, pods, network, head, "grafana", NS, "http")
    assert not _via_service(objects, pods, network, head, "prometheus", NS, "http")
    assert not _via_service(objects, pods, network, pod(pods, "Deployment/minio", NS), "mlflow", NS, "http")


def test_the_evaluator_denies_what_an_except_carves_out():
    """ipBlock with except, per policy and rule: a second policy may open what the first leaves shut."""
    def policy(name, rules):
        return {"kind": "NetworkPolicy", "metadata": {"name": name, "namespace": NS},
                "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": rules}}

    web = [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.0.0/16", "10.0.0.0/8"]}}]}]
    src = Pod("p", NS, {})
    net = Network([policy("web", web)], extra_namespaces=[NS])
    assert net.reaches_any_port(src, INTERNET)
    assert not net.reaches_any_port(src, METADATA) and not net.reaches_any_port(src, NODES[2])
    api = [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"port": 6443, "protocol": "TCP"}]}]
    net = Network([policy("web", web), policy("api", api)], extra_namespaces=[NS])
    assert net.allows(src, NODES[2], 6443) and not net.allows(src, NODES[2], 10250)
    assert not net.allows(src, NODES[2], 6443, "UDP")
    # No policy selects the pod: open, as Kubernetes has it.
    assert Network([], extra_namespaces=[NS]).reaches_any_port(src, METADATA)


# --- Pod Security -----------------------------------------------------------------------------------


def _namespaces(objects) -> dict[str, str]:
    return {o["metadata"]["name"]: pod_security.enforced(o) for o in objects if o["kind"] == "Namespace"}


def test_our_namespace_and_kuberays_enforce_restricted(objects):
    levels = _namespaces(objects)
    assert levels[NS] == "restricted" and levels[KUBERAY_NS] == "restricted"
    # KFP's namespace is upstream's; the registry's hostPort and the state folders' chown need privileged.
    assert levels[f"{NS}-registry"] == "privileged"


def test_every_pod_meets_the_level_its_namespace_enforces(objects):
    levels = _namespaces(objects)
    broken = {}
    for o in objects:
        level = levels.get(o["metadata"].get("namespace"), "privileged")
        for spec in _pod_specs(o):
            found = pod_security.violations(spec, level)
            if found:
                broken[(o["kind"], o["metadata"]["name"])] = found
    assert broken == {}


def test_every_pod_of_ours_meets_restricted_wherever_it_runs(objects):
    """Our pods, the samples the pipeline creates included; the state-folders Job is root by design."""
    ours = [o for o in objects if o["metadata"].get("namespace") in (NS, f"{NS}-registry") and _pod_specs(o)]
    assert {o["kind"] for o in ours} >= {"Deployment", "Job", "RayJob"}
    broken = {o["metadata"]["name"]: v for o in ours for spec in _pod_specs(o)
              if (v := pod_security.violations(spec, "restricted")) and o["metadata"]["name"] != "state-folders"}
    registry = next(o for o in ours if o["metadata"]["name"] == "registry")
    assert broken == {"registry": pod_security.violations(_pod_specs(registry)[0], "restricted")}
    assert all("hostPort" in v for v in broken["registry"])  # nodes pull through it; nothing else is off


def test_kfp_namespace_stays_baseline_for_the_pods_argo_makes_at_run_time(objects):
    """KFP's own Deployments meet restricted, but its namespace enforces baseline: the pipeline
    pods are made at run time by Argo and KFP (executor init/wait containers, drivers), not by
    this render, so nothing here can vouch for them."""
    kfp = {o["metadata"]["name"]: v for o in objects if o["metadata"].get("namespace") == KFP_NS
           for spec in _pod_specs(o) if (v := pod_security.violations(spec, "restricted"))}
    assert kfp == {}
    assert _namespaces(objects)[KFP_NS] == "baseline"


@pytest.mark.parametrize("field, value, rule", [
    (("securityContext", "runAsNonRoot"), False, "runAsNonRoot"),
    (("containers", 0, "securityContext", "allowPrivilegeEscalation"), True, "allowPrivilegeEscalation"),
    (("containers", 0, "securityContext", "capabilities"), {"drop": ["NET_RAW"]}, "drop ALL"),
    (("securityContext", "seccompProfile"), {"type": "Unconfined"}, "seccomp"),
    (("hostNetwork",), True, "hostNetwork"),
    (("containers", 0, "securityContext", "privileged"), True, "privileged"),
    (("volumes",), [{"name": "h", "hostPath": {"path": "/"}}], "hostPath"),
])
def test_the_checker_names_each_broken_rule(field, value, rule):
    spec = {"securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "securityContext": {"allowPrivilegeEscalation": False,
                                                             "capabilities": {"drop": ["ALL"]}}}]}
    assert pod_security.violations(spec) == []
    target = spec
    for key in field[:-1]:
        target = target[key]
    target[field[-1]] = value
    assert any(rule in v for v in pod_security.violations(spec)), pod_security.violations(spec)

