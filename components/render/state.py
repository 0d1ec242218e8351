"""Platform state on one known folder of the control plane, so it can outlive the cluster.

Every claim that holds state (MinIO's objects, MLflow's Postgres, the image
registry, Prometheus, KFP's run database) is bound to a PersistentVolume of its
own under ``state.host_path`` (``components/core/platform.yaml``) on the node labelled
``state.node_label=true``; the pods that mount them are pinned there. Terraform
mounts a kept Cinder volume at that folder when asked (``state_volume_id``), so
``terraform destroy`` and a new ``apply`` find the same data; without one it is
the root disk. Volumes are ``Retain``: deleting a claim never deletes data.

A one-shot Job (in the registry's privileged namespace, the only one that may
mount a host path) makes each folder and gives it to the user its pod runs as.
"""

from __future__ import annotations

import shlex

from components.cluster import podspec
from components.core.platform import platform

PHASE_ANNOTATION = "servicetime.io/phase"  # "first": applied with the Namespaces and CRDs, before the rest
PREPARE_JOB = "state-folders"
PV_PREFIX = "servicetime-state-"
WORKLOADS = {"Deployment", "StatefulSet"}


def stateful_claims() -> dict[tuple[str, str], str]:
    """(namespace, claim) -> folder under the state path."""
    p = platform()
    return {
        (p.namespace, "minio-data"): "minio",
        (p.namespace, "postgres-data"): "postgres",
        (p.namespace, "prometheus-data"): "prometheus",
        (f"{p.namespace}-registry", "registry-data"): "registry",
        (p.namespaces.kfp, "mysql-pv-claim"): "kfp-mysql",
    }


def _claims_of(spec: dict) -> list[str]:
    return [v["persistentVolumeClaim"]["claimName"] for v in spec.get("volumes", []) if "persistentVolumeClaim" in v]


def _owner(spec: dict) -> tuple[int, int]:
    """(uid, gid) the pod writes as: the container's runAsUser, else the pod's; fsGroup, else runAsGroup."""
    pod = spec.get("securityContext") or {}
    container = spec["containers"][0].get("securityContext") or {}
    uid = container.get("runAsUser", pod.get("runAsUser", 0))
    gid = pod.get("fsGroup", container.get("runAsGroup", pod.get("runAsGroup", uid)))
    return int(uid), int(gid)


def volume(namespace: str, claim: str, folder: str, size: str, access: list[str]) -> dict:
    p = platform()
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": PV_PREFIX + folder, "labels": {**podspec.PART_OF, "servicetime.io/state": folder}},
        "spec": {
            "capacity": {"storage": size},
            "accessModes": access,
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "claimRef": {"namespace": namespace, "name": claim},
            "hostPath": {"path": f"{p.state.host_path}/{folder}", "type": "Directory"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": p.state.node_label, "operator": "In", "values": ["true"]}]}]}},
        },
    }


def prepare_job(owners: dict[str, tuple[int, int]]) -> dict:
    """Make each folder, owned by its pod's user (never touching what is inside)."""
    p = platform()
    root = "/state"
    lines = [f"mkdir -p {root}/{f} && chown {u}:{g} {root}/{f} && chmod 0770 {root}/{f}"
             for f, (u, g) in sorted(owners.items())]
    script = "set -eu\n" + "\n".join(lines) + "\nls -ln " + shlex.quote(root) + "\n"
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": PREPARE_JOB,
            "namespace": f"{p.namespace}-registry",
            "labels": {"app.kubernetes.io/name": PREPARE_JOB, **podspec.PART_OF},
            "annotations": {PHASE_ANNOTATION: "first"},
        },
        "spec": {
            "backoffLimit": 3,
            "ttlSecondsAfterFinished": 3600,
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": PREPARE_JOB, **podspec.PART_OF}},
                "spec": {
                    "restartPolicy": "OnFailure",
                    "automountServiceAccountToken": False,
                    "nodeSelector": {p.state.node_label: "true"},
                    "containers": [
                        {
                            "name": "folders",
                            "image": f"docker.io/library/busybox:{p.versions.busybox}",
                            "command": ["sh", "-c", script],
                            # Root, to chown: the only root container of the install, in the privileged namespace.
                            "securityContext": {
                                "runAsUser": 0,
                                "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"], "add": ["CHOWN", "FOWNER", "DAC_OVERRIDE"]},
                            },
                            "resources": podspec.resources("10m", "16Mi", "100m", "64Mi"),
                            "volumeMounts": [{"name": "state", "mountPath": root}],
                        }
                    ],
                    "volumes": [
                        {"name": "state", "hostPath": {"path": p.state.host_path, "type": "DirectoryOrCreate"}}
                    ],
                },
            },
        },
    }


def persist(objects: list[dict]) -> list[dict]:
    """Bind every stateful claim to its folder, pin its pods to the state node, add the folders' Job."""
    p = platform()
    claims = stateful_claims()
    found = {(o["metadata"].get("namespace"), o["metadata"]["name"]): o
             for o in objects if o["kind"] == "PersistentVolumeClaim"}
    missing = [c for c in claims if c not in found]
    if missing:
        raise ValueError(f"stateful claims absent from the render: {missing}")
    owners: dict[str, tuple[int, int]] = {}
    for obj in objects:
        if obj["kind"] not in WORKLOADS:
            continue
        ns, spec = obj["metadata"].get("namespace"), obj["spec"]["template"]["spec"]
        mine = [claims[(ns, c)] for c in _claims_of(spec) if (ns, c) in claims]
        if mine:
            spec.setdefault("nodeSelector", {})[p.state.node_label] = "true"
            for folder in mine:
                owners[folder] = _owner(spec)
    volumes = []
    for key, folder in claims.items():
        claim = found[key]
        claim["spec"]["storageClassName"] = ""
        claim["spec"]["volumeName"] = PV_PREFIX + folder
        volumes.append(volume(*key, folder, claim["spec"]["resources"]["requests"]["storage"],
                              claim["spec"]["accessModes"]))
    return [*objects, *volumes, prepare_job(owners)]
