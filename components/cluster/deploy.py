"""The model server on Kubernetes: its Deployment and Service, and a canary rollout.

``build_model_server_deployment`` is the one definition of the serving pod: the
kustomize base renders it into ``k8s/base/generated/`` and ``rollout`` uses it for
the canary, so the two cannot drift. The stable Deployment follows the
``production`` alias, which only a promoted canary moves (``register`` moves
``champion`` before the canary runs; following that, stable would already serve
the candidate and the canary would compare the model with itself). ``rollout``
runs inside a pipeline pod: it starts the new model version beside the stable
one, sends it synthetic traffic while Prometheus watches, then promotes it
(``production`` moves, the stable pods restart onto it) or removes it.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.parse
import urllib.request
from typing import Any, Callable

from components.cluster import podspec, s3_users
from components.cluster.kube import kube_apis
from components.core.platform import cluster_history_uri, cluster_prediction_log_uri, cluster_report_uri, platform
from components.serving import metric_names as m

log = logging.getLogger(__name__)

MODEL_SERVER = "model-server"
CANARY = f"{MODEL_SERVER}-canary"
CONTAINER = "model-server"
NAME_LABEL = "app.kubernetes.io/name"
TRACK_LABEL = "servicetime.io/track"  # stable | canary; Prometheus keeps it as `track`
VERSION_ANNOTATION = "servicetime.io/model-version"  # changing it restarts the stable pods onto `production`
PRODUCTION = "production"  # the alias the stable Deployment serves

# Promotion gates: a canary that errs or falls back more than this is rolled back.
MAX_ERROR_RATIO = 0.02
MAX_FALLBACK_RATIO = 0.05


def production_uri() -> str:
    return f"models:/{platform().model_name}@{PRODUCTION}"


def _server_args(model_uri: str) -> list[str]:
    """Its prediction log and the online reports it exposes live in the data bucket, not in the pod."""
    port = platform().ports.model_server
    where = {"monitor.prediction_log_uri": cluster_prediction_log_uri(), "monitor.report_uri": cluster_report_uri(),
             "serve.history_uri": cluster_history_uri()}
    sets = [arg for key, uri in where.items() for arg in ("--set", f"{key}={uri}")]
    return [*sets, "serve", "--host", "0.0.0.0", "--port", str(port), "--model-uri", model_uri]


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
        # Its own read-only S3 user; the bearer token for /predict (health and /metrics stay open
        # so that probes and Prometheus need none).
        "env": [*podspec.platform_env(s3_secret=s3_users.users()["model-server"].secret),
                podspec.secret_env(podspec.API_TOKEN_ENV, podspec.API_TOKEN_SECRET, "token")],
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


def build_canary(model_uri: str, image: str) -> dict:
    """The canary: one pod of ``model_uri`` with the stable image, so only the model differs."""
    return build_model_server_deployment(model_uri, name=CANARY, replicas=1, image=image, track="canary")


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


def drive_traffic(url: str, bodies: list[bytes], seconds: float, rate_per_s: float = 5.0,
                  clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> dict:
    """POST ``bodies`` round-robin to ``url`` for ``seconds``: traffic for the canary gate to judge.

    The Service spreads it over stable and canary pods; returns the counts.
    """
    sent = ok = 0
    errors: dict[str, int] = {}
    end = clock() + seconds
    while clock() < end and bodies:
        body = bodies[sent % len(bodies)]
        sent += 1
        req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310 (cluster-internal URL)
                ok += resp.status == 200
        except Exception as exc:  # counted, not raised: the gate reads the server's own metrics
            key = type(exc).__name__
            errors[key] = errors.get(key, 0) + 1
        sleep(1.0 / rate_per_s)
    return {"sent": sent, "ok": ok, "errors": errors}


def rollout(
    model_uri: str,
    namespace: str,
    prometheus_url: str,
    canary_seconds: float,
    apps_api=None,
    query: Callable[[str], float | None] | None = None,
    *,
    set_production: Callable[[str | None], str | None],
    traffic: Callable[[float], dict] | None = None,
    ready_timeout_s: float = 600.0,
    max_error_ratio: float = MAX_ERROR_RATIO,
    max_fallback_ratio: float = MAX_FALLBACK_RATIO,
    require_traffic: bool | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict:
    """Canary ``model_uri`` (``models:/<name>/<version>``) next to the stable server; promote or roll back.

    ``set_production(version)`` moves the ``production`` alias and returns the version
    it pointed at (None: none); ``traffic(seconds)`` drives load during the canary
    window (then no traffic fails the gate). Returns
    ``{"promoted": bool, "reasons": [...], "metrics": {...}, "model_uri": ..., "traffic": ...}``.
    """
    apps_api = apps_api or kube_apis("AppsV1Api")[0]
    query = query or prometheus_query(prometheus_url)
    require_traffic = traffic is not None if require_traffic is None else require_traffic
    version = model_uri.rstrip("/").rsplit("/", 1)[-1]
    reasons: list[str] = []

    stable = _as_dict(apps_api.read_namespaced_deployment(MODEL_SERVER, namespace))
    containers = stable["spec"]["template"]["spec"]["containers"]
    stable_image = next(c["image"] for c in containers if c["name"] == CONTAINER)
    old_annotations = stable["spec"]["template"].get("metadata", {}).get("annotations") or {}

    canary = build_canary(model_uri, stable_image)
    try:
        apps_api.create_namespaced_deployment(namespace, canary)
    except Exception as exc:
        if _status_code(exc) != 409:
            raise
        apps_api.replace_namespaced_deployment(CANARY, namespace, canary)
    log.info("canary %s started with %s", CANARY, model_uri)

    def rollback(reason: str, metrics: dict, load: dict | None = None) -> dict:
        reasons.append(reason)
        _delete_canary(apps_api, namespace)
        log.warning("rolled back %s: %s", model_uri, "; ".join(reasons))
        return {"promoted": False, "reasons": reasons, "metrics": metrics, "model_uri": model_uri, "traffic": load}

    if not _wait_ready(apps_api, CANARY, namespace, ready_timeout_s, sleep, clock):
        return rollback(f"canary not ready within {ready_timeout_s:.0f}s", {})

    load = traffic(canary_seconds) if traffic else None
    if load is None:
        sleep(canary_seconds)
    else:
        log.info("synthetic traffic during the canary: %s", load)
    window = f"{max(int(canary_seconds), 60)}s"  # rate() needs at least a few scrapes
    metrics = {key: query(q) for key, q in canary_queries(window).items()}
    log.info("canary metrics over %s: %s", window, metrics)

    if not metrics["requests_per_s"]:
        if require_traffic:
            return rollback("no canary traffic observed", metrics, load)
        reasons.append("no canary traffic observed; judged on readiness only")
    if (metrics["error_ratio"] or 0.0) > max_error_ratio:
        return rollback(f"error ratio {metrics['error_ratio']:.3f} > {max_error_ratio}", metrics, load)
    if (metrics["fallback_ratio"] or 0.0) > max_fallback_ratio:
        return rollback(f"fallback ratio {metrics['fallback_ratio']:.3f} > {max_fallback_ratio}", metrics, load)

    # Promote: `production` moves, then a new pod-template annotation rolls the
    # stable pods (maxUnavailable 0) onto it; then the canary goes.
    def restart_stable(annotation: str | None) -> None:
        patch = {"spec": {"template": {"metadata": {"annotations": {VERSION_ANNOTATION: annotation}}}}}
        apps_api.patch_namespaced_deployment(MODEL_SERVER, namespace, patch)

    previous = set_production(version)
    restart_stable(version)
    if not _wait_ready(apps_api, MODEL_SERVER, namespace, ready_timeout_s, sleep, clock):
        # maxUnavailable 0 kept the old pods serving; put the alias and their spec back too.
        set_production(previous)
        restart_stable(old_annotations.get(VERSION_ANNOTATION))
        return rollback("stable deployment did not become ready with the new model; reverted", metrics, load)
    _delete_canary(apps_api, namespace)
    reasons.append(f"canary healthy: promoted ({PRODUCTION} {previous or '-'} -> {version})")
    log.info("promoted %s", model_uri)
    return {"promoted": True, "reasons": reasons, "metrics": metrics, "model_uri": model_uri, "traffic": load}
