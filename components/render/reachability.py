"""Which pod may talk to which, computed from rendered NetworkPolicies with Kubernetes' semantics.

Used by the system tests on the whole install (``components.render.install``) and
by ``servicetime cluster flows``: every flow the platform needs must be open, and a
pod of another namespace must reach none of the data stores. Semantics, after the
NetworkPolicy API reference: a pod selected by no policy of a direction is open in
that direction; once selected, traffic must match some rule of some selecting
policy; within a peer, ``podSelector`` and ``namespaceSelector`` are ANDed, peers of
a rule are ORed; a peer with only ``podSelector`` means the policy's own namespace;
named ports resolve against the destination pod's container ports; ``ipBlock``
peers (``cidr`` less its ``except`` blocks) match endpoints outside the pod network
only (here: ``Endpoint``: the metadata service, a node, the API server), since
policies apply after a Service's DNAT to its pods. Egress and ingress are both
evaluated: a connection needs the source's egress and the destination's ingress.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Iterable, Mapping

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}
KUBERAY_NAME = "kuberay"  # the app.kubernetes.io/name KubeRay gives Ray pods unless the template sets one
SYSTEM_NAMESPACES = ("default", "kube-system")


@dataclass(frozen=True)
class Pod:
    name: str  # e.g. "Deployment/minio", "RayJob/train-x/head"
    namespace: str
    labels: Mapping[str, str]
    ports: Mapping[str, int] = field(default_factory=dict)  # named container ports


@dataclass(frozen=True)
class Endpoint:
    """Something outside the pod network (the metadata service, a node address)."""

    name: str
    ip: str


def _template_pod(kind: str, name: str, namespace: str, template: dict, extra_labels: dict | None = None) -> Pod:
    spec = template.get("spec", {})
    ports = {p["name"]: p["containerPort"] for c in spec.get("containers", []) for p in c.get("ports", []) or []
             if p.get("name")}
    labels = {**(extra_labels or {}), **(template.get("metadata", {}).get("labels") or {})}
    return Pod(f"{kind}/{name}", namespace, labels, ports)


def _rayjob_pods(obj: dict, namespace: str) -> list[Pod]:
    """Head, workers and submitter with the labels KubeRay adds (template labels override all but three)."""
    name = obj["metadata"]["name"]
    cluster = obj["spec"]["rayClusterSpec"]

    def ray_labels(node_type: str, group: str) -> dict:
        return {"ray.io/is-ray-node": "yes", "ray.io/cluster": name, "ray.io/node-type": node_type,
                "ray.io/group": group, "app.kubernetes.io/name": KUBERAY_NAME,
                "app.kubernetes.io/created-by": "kuberay-operator"}

    def fixed(pod: Pod, node_type: str, group: str) -> Pod:
        # ray.io/node-type, ray.io/group and ray.io/cluster cannot be overridden by the template.
        keep = {k: v for k, v in ray_labels(node_type, group).items()
                if k in ("ray.io/node-type", "ray.io/group", "ray.io/cluster")}
        return Pod(pod.name, pod.namespace, {**pod.labels, **keep}, pod.ports)

    head = cluster["headGroupSpec"]["template"]
    pods = [fixed(_template_pod("RayJob", f"{name}/head", namespace, head, ray_labels("head", "headgroup")),
                  "head", "headgroup")]
    for group in cluster.get("workerGroupSpecs", []):
        g = group["groupName"]
        pods.append(fixed(_template_pod("RayJob", f"{name}/{g}", namespace, group["template"],
                                        ray_labels("worker", g)), "worker", g))
    submitter = obj["spec"].get("submitterPodTemplate")
    if submitter:
        pods.append(_template_pod("RayJob", f"{name}/submitter", namespace, submitter,
                                  {"job-name": name, "batch.kubernetes.io/job-name": name}))
    return pods


def pods_of(objects: Iterable[dict]) -> list[Pod]:
    """The pods the rendered workloads (and RayJobs) would create."""
    pods = []
    for obj in objects:
        ns = obj["metadata"].get("namespace", "default")
        name = obj["metadata"]["name"]
        if obj["kind"] in WORKLOAD_KINDS:
            pods.append(_template_pod(obj["kind"], name, ns, obj["spec"]["template"]))
        elif obj["kind"] == "CronJob":
            pods.append(_template_pod("CronJob", name, ns, obj["spec"]["jobTemplate"]["spec"]["template"]))
        elif obj["kind"] == "RayJob":
            pods += _rayjob_pods(obj, ns)
    return pods


def namespace_labels(objects: Iterable[dict], extra: Iterable[str] = ()) -> dict[str, dict[str, str]]:
    """Labels of every namespace, with the ``kubernetes.io/metadata.name`` label the API server sets."""
    out = {ns: {"kubernetes.io/metadata.name": ns} for ns in (*SYSTEM_NAMESPACES, *extra)}
    for obj in objects:
        if obj["kind"] == "Namespace":
            name = obj["metadata"]["name"]
            out[name] = {**(obj["metadata"].get("labels") or {}), "kubernetes.io/metadata.name": name}
    return out


def selects(selector: dict | None, labels: Mapping[str, str]) -> bool:
    """A label selector against labels; an empty selector selects everything."""
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


class Network:
    """The policies of one rendered install, and the question: may ``src`` reach ``dst`` on ``port``?"""

    def __init__(self, objects: Iterable[dict], extra_namespaces: Iterable[str] = ()):
        objects = list(objects)
        self.policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
        self.namespaces = namespace_labels(objects, extra_namespaces)

    def _types(self, policy: dict) -> set[str]:
        spec = policy["spec"]
        if spec.get("policyTypes"):
            return set(spec["policyTypes"])
        return {"Ingress"} | ({"Egress"} if "egress" in spec else set())

    def _selecting(self, pod: Pod, direction: str) -> list[dict]:
        return [p for p in self.policies
                if p["metadata"].get("namespace", "default") == pod.namespace
                and direction in self._types(p) and selects(p["spec"].get("podSelector"), pod.labels)]

    def _peer_matches(self, peer: dict, other: Pod | Endpoint, policy_ns: str) -> bool:
        if "ipBlock" in peer:
            if not isinstance(other, Endpoint):
                return False
            ip = ipaddress.ip_address(other.ip)
            block = peer["ipBlock"]
            if ip not in ipaddress.ip_network(block["cidr"]):
                return False
            return not any(ip in ipaddress.ip_network(e) for e in block.get("except") or [])
        if isinstance(other, Endpoint):
            return False
        if "namespaceSelector" in peer:
            ns_ok = selects(
                peer["namespaceSelector"],
                self.namespaces.get(other.namespace, {"kubernetes.io/metadata.name": other.namespace}),
            )
        else:
            ns_ok = other.namespace == policy_ns
        pod_ok = selects(peer.get("podSelector"), other.labels) if "podSelector" in peer else True
        return ns_ok and pod_ok

    @staticmethod
    def _port_matches(rule_ports: list[dict] | None, port: int, protocol: str, dst: Pod | Endpoint) -> bool:
        if not rule_ports:
            return True
        for rp in rule_ports:
            if rp.get("protocol", "TCP") != protocol:
                continue
            want = rp.get("port")
            if want is None:
                return True
            if isinstance(want, str):
                if not isinstance(dst, Pod) or dst.ports.get(want) is None:
                    continue
                want = dst.ports[want]
            if want <= port <= rp.get("endPort", want):
                return True
        return False

    def _allowed(self, pod: Pod, other: Pod | Endpoint, direction: str, port: int, protocol: str,
                 dst: Pod | Endpoint) -> bool:
        policies = self._selecting(pod, direction)
        if not policies:
            return True
        key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
        for policy in policies:
            for rule in policy["spec"].get(key) or []:
                peers = rule.get(peers_key)
                peer_ok = not peers or any(self._peer_matches(p, other, pod.namespace) for p in peers)
                if peer_ok and self._port_matches(rule.get("ports"), port, protocol, dst):
                    return True
        return False

    def reaches_any_port(self, src: Pod, dst: Endpoint) -> bool:
        """Whether ``src``'s egress admits ``dst`` on some port and protocol (a rule's ports only narrow it)."""
        policies = self._selecting(src, "Egress")
        if not policies:
            return True
        return any(not rule.get("to") or any(self._peer_matches(p, dst, src.namespace) for p in rule["to"])
                   for policy in policies for rule in policy["spec"].get("egress") or [])

    def allows(self, src: Pod, dst: Pod | Endpoint, port: int | str, protocol: str = "TCP") -> bool:
        """Egress of ``src`` and ingress of ``dst`` both admit the connection (``port``: number or name)."""
        if isinstance(port, str):
            if not isinstance(dst, Pod) or port not in dst.ports:
                raise KeyError(f"{getattr(dst, 'name', dst)} has no container port named {port!r}")
            port = dst.ports[port]
        egress = self._allowed(src, dst, "Egress", port, protocol, dst)
        ingress = True if isinstance(dst, Endpoint) else self._allowed(dst, src, "Ingress", port, protocol, dst)
        return egress and ingress


def service_backends(objects: Iterable[dict], pods: list[Pod], service: str, namespace: str,
                     port_name: str) -> list[tuple[Pod, int | str]]:
    """(pod, target port) behind ``service``'s port ``port_name``, following an ExternalName to its Service."""
    objects = list(objects)
    svc = next((o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == service
                and o["metadata"].get("namespace") == namespace), None)
    if svc is None:
        raise KeyError(f"no Service {namespace}/{service}")
    if svc["spec"].get("type") == "ExternalName":
        host = svc["spec"]["externalName"].split(".")
        if len(host) >= 3 and host[2] == "svc":
            return service_backends(objects, pods, host[0], host[1], port_name)
        raise KeyError(f"{namespace}/{service} names {svc['spec']['externalName']}, outside the cluster")
    port = next((p for p in svc["spec"]["ports"] if p.get("name") == port_name), None)
    if port is None:
        raise KeyError(f"Service {namespace}/{service} has no port {port_name!r}")
    target = port.get("targetPort", port["port"])
    selector = svc["spec"].get("selector") or {}
    backends = [
        p for p in pods if p.namespace == namespace and selector and selects({"matchLabels": selector}, p.labels)
    ]
    return [(p, target) for p in backends]
