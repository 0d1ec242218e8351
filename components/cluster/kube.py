"""The Kubernetes API clients, configured once the same way everywhere: in-cluster inside a pipeline
pod, else from the kubeconfig (a laptop through the SSH tunnel)."""

from __future__ import annotations


def kube_apis(*names: str) -> tuple:
    """Clients by class name, e.g. ``kube_apis("AppsV1Api")`` or ``kube_apis("CustomObjectsApi", "CoreV1Api")``."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return tuple(getattr(client, name)() for name in names)
