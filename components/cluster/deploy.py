"""The model server on Kubernetes: its Deployment and Service, and a canary rollout.

``build_model_server_deployment`` is the one definition of the serving pod: the
kustomize base renders it into ``k8s/base/generated/`` and ``rollout`` uses it for
the canary, so the two cannot drift. ``rollout`` runs inside a pipeline pod: it
starts the new model beside the stable one, lets Prometheus watch it, then
promotes it (the stable Deployment takes the new model URI) or removes it.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.parse
import urllib.request
from typing import Any, Callable

from components.cluster import podspec
from components.platform import platform
from components.serving import metric_names as m

log = logging.getLogger(__name__)

MODEL_SERVER = "model-server"
CANARY = f"{MODEL_SERVER}-canary"
CONTAINER = "model-server"
NAME_LABEL = "app.kubernetes.io/name"
TRACK_LABEL = "servicetime.io/track"  # stable | canary; Prometheus keeps it as `track`

# Promotion gates: a canary that errs or falls back more than this is rolled back.
MAX_ERROR_RATIO = 0.02
MAX_FALLBACK_RATIO = 0.05


def champion_uri() -> str:
    return f"models:/{platform().model_name}@champion"


def _server_args(model_uri: str) -> list[str]:
    port = platform().ports.model_server
    return ["serve", "--host", "0.0.0.0", "--port", str(port), "--model-uri", model_uri]


def build_model_server_deployment(
    model_uri: str,
    name: str = MODEL_SERVER,
    replicas: int = 1,
    image: str | None = None,
    track: str | None = None,
) -> dict:
    """A hardened Deployment of ``servicetime serve`` for one model URI."""
    p = platform()
    track = track or ("canary" if name.endswith("canary") else "stable")
    selector = {NAME_LABEL: MODEL_SERVER, TRACK_LABEL: track}
    labels = {**selector, "app.kubernetes.io/component": "model-server", **podspec.PART_OF}
    tmp, tmp_mount = podspec.tmp_volume()

    def probe(path: str, period: int, failures: int) -> dict:
        return {
            "httpGet": {"path": path, "port": "http"},
            "periodSeconds": period,
            "timeoutSeconds": 2,
            "failureThreshold": failures,
        }

    container = {
        "name": CONTAINER,
        "image": image or p.image.ref,
        "imagePullPolicy": "IfNotPresent",
        "args": _server_args(model_uri),
        "env": podspec.platform_env(),
        "ports": [{"name": "http", "containerPort": p.ports.model_server, "protocol": "TCP"}],
        # Loading a model from MLflow can take a minute: startup allows it, then
        # liveness only asks "is the process alive", readiness "is a model loaded".
        "startupProbe": probe("/healthz", 5, 36),
        "livenessProbe": probe("/healthz", 10, 3),
        "readinessProbe": probe("/readyz", 5, 2),
        "resources": podspec.resources("250m", "768Mi", "2", "2Gi"),
        "securityContext": podspec.container_security_context(),
        "volumeMounts": [tmp_mount],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": selector},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(p.ports.model_server),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": {
                    "serviceAccountName": MODEL_SERVER,
                    "automountServiceAccountToken": False,  # it never calls the API
                    "securityContext": podspec.pod_security_context(),
                    "containers": [container],
                    "volumes": [tmp],
                },
            },
        },
    }


def build_model_server_service() -> dict:
    """One Service over stable and canary pods: the canary takes its share of traffic."""
    port = platform().ports.model_server
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": MODEL_SERVER, "labels": {NAME_LABEL: MODEL_SERVER, **podspec.PART_OF}},
        "spec": {
            "selector": {NAME_LABEL: MODEL_SERVER},
            "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


# --- rollout ---------------------------------------------------------------


def _as_dict(obj: Any) -> dict:
    """API objects as plain JSON-shaped dicts (fakes in tests already are)."""
    if obj is None or isinstance(obj, dict):
        return obj or {}
    from kubernetes.client import ApiClient

    return ApiClient().sanitize_for_serialization(obj)


def _status_code(exc: Exception) -> int | None:
    return getattr(exc, "status", None)


def _default_apps_api():
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.AppsV1Api()


def prometheus_query(prometheus_url: str, timeout_s: float = 10.0) -> Callable[[str], float | None]:
    """A query function: PromQL in, the first sample's value out (None when empty)."""

    def query(promql: str) -> float | None:
        url = f"{prometheus_url.rstrip('/')}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 (cluster-internal URL)
            body = json.load(resp)
        if body.get("status") != "success":
            raise RuntimeError(f"Prometheus query failed: {body}")
        result = body["data"]["result"]
        if not result:
            return None
        value = float(result[0]["value"][1])
        return None if value != value else value  # NaN (0/0) means no traffic

    return query


def canary_queries(window: str) -> dict[str, str]:
    """PromQL for the canary's health over ``window`` (labels set by the scrape config)."""
    sel = f'job="{m.SCRAPE_JOB}",track="canary"'
    requests = f"sum(rate({m.REQUESTS}_total{{{sel}}}[{window}]))"
    predictions = f"sum(rate({m.PREDICTIONS}_total{{{sel}}}[{window}]))"
    return {
        "requests_per_s": requests,
        "error_ratio": f'sum(rate({m.REQUESTS}_total{{{sel},{m.LABEL_STATUS}=~"5.."}}[{window}])) / {requests}',
        "fallback_ratio": (
            f'sum(rate({m.PREDICTIONS}_total{{{sel},{m.LABEL_SOURCE}="fallback"}}[{window}])) / {predictions}'
        ),
    }


def _wait_ready(apps_api, name: str, namespace: str, timeout_s: float, sleep, clock) -> bool:
    deadline = clock() + timeout_s
    while True:
        dep = _as_dict(apps_api.read_namespaced_deployment_status(name, namespace))
        want = dep.get("spec", {}).get("replicas", 1)
        status = dep.get("status") or {}
        updated = status.get("updatedReplicas") or 0
        ready = status.get("readyReplicas") or 0
        # Counts describe the current spec only once the controller has seen it.
        current = (status.get("observedGeneration") or 0) >= (dep.get("metadata", {}).get("generation") or 0)
        if current and ready >= want and updated >= want:
            return True
        if clock() >= deadline:
            return False
        log.info("waiting for %s: %s/%s ready", name, ready, want)
        sleep(5)


def _delete_canary(apps_api, namespace: str) -> None:
    try:
        apps_api.delete_namespaced_deployment(CANARY, namespace)
    except Exception as exc:  # already gone is fine
        if _status_code(exc) != 404:
            raise


def rollout(
    model_uri: str,
    namespace: str,
    prometheus_url: str,
    canary_seconds: float,
    apps_api=None,
    query: Callable[[str], float | None] | None = None,
    *,
    ready_timeout_s: float = 600.0,
    max_error_ratio: float = MAX_ERROR_RATIO,
    max_fallback_ratio: float = MAX_FALLBACK_RATIO,
    require_traffic: bool = False,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict:
    """Canary ``model_uri`` next to the stable server; promote it or roll it back.

    Returns ``{"promoted": bool, "reasons": [...], "metrics": {...}, "model_uri": ...}``.
    """
    apps_api = apps_api or _default_apps_api()
    query = query or prometheus_query(prometheus_url)
    reasons: list[str] = []

    stable = _as_dict(apps_api.read_namespaced_deployment(MODEL_SERVER, namespace))
    containers = stable["spec"]["template"]["spec"]["containers"]
    stable_image = next(c["image"] for c in containers if c["name"] == CONTAINER)

    # Same image as stable, so the only difference under test is the model.
    canary = build_model_server_deployment(model_uri, name=CANARY, replicas=1, image=stable_image, track="canary")
    try:
        apps_api.create_namespaced_deployment(namespace, canary)
    except Exception as exc:
        if _status_code(exc) != 409:
            raise
        apps_api.replace_namespaced_deployment(CANARY, namespace, canary)
    log.info("canary %s started with %s", CANARY, model_uri)

    def rollback(reason: str, metrics: dict) -> dict:
        reasons.append(reason)
        _delete_canary(apps_api, namespace)
        log.warning("rolled back %s: %s", model_uri, "; ".join(reasons))
        return {"promoted": False, "reasons": reasons, "metrics": metrics, "model_uri": model_uri}

    if not _wait_ready(apps_api, CANARY, namespace, ready_timeout_s, sleep, clock):
        return rollback(f"canary not ready within {ready_timeout_s:.0f}s", {})

    sleep(canary_seconds)
    window = f"{max(int(canary_seconds), 60)}s"  # rate() needs at least a few scrapes
    metrics = {key: query(q) for key, q in canary_queries(window).items()}
    log.info("canary metrics over %s: %s", window, metrics)

    if not metrics["requests_per_s"]:
        if require_traffic:
            return rollback("no canary traffic observed", metrics)
        reasons.append("no canary traffic observed; judged on readiness only")
    if (metrics["error_ratio"] or 0.0) > max_error_ratio:
        return rollback(f"error ratio {metrics['error_ratio']:.3f} > {max_error_ratio}", metrics)
    if (metrics["fallback_ratio"] or 0.0) > max_fallback_ratio:
        return rollback(f"fallback ratio {metrics['fallback_ratio']:.3f} > {max_fallback_ratio}", metrics)

    # Promote: the stable Deployment rolls to the new model (maxUnavailable 0),
    # then the canary goes. A strategic merge patch replaces the args list whole.
    def set_args(args: list[str]) -> None:
        patch = {"spec": {"template": {"spec": {"containers": [{"name": CONTAINER, "args": args}]}}}}
        apps_api.patch_namespaced_deployment(MODEL_SERVER, namespace, patch)

    set_args(_server_args(model_uri))
    if not _wait_ready(apps_api, MODEL_SERVER, namespace, ready_timeout_s, sleep, clock):
        # maxUnavailable 0 kept the old pods serving; put their spec back too.
        old_args = next(c.get("args", []) for c in containers if c["name"] == CONTAINER)
        set_args(old_args)
        return rollback("stable deployment did not become ready with the new model; reverted", metrics)
    _delete_canary(apps_api, namespace)
    reasons.append("canary healthy: promoted")
    log.info("promoted %s", model_uri)
    return {"promoted": True, "reasons": reasons, "metrics": metrics, "model_uri": model_uri}
