"""The cluster side, checked offline: manifests, generated objects, scripts, monitoring.

Everything here runs without a cluster or network: overlays are rendered with
``kubectl kustomize`` and validated against the Kubernetes 1.33 schemas, RayJobs
against KubeRay's CRDs (from the pinned upstream tree; see ``tests/conftest.py``), rollout and run_rayjob against
fake API objects, shell scripts with shellcheck, monitoring files with promtool.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from components.cluster import deploy, podspec, rayjob, s3_users
from components.core.platform import platform
from components.render import cluster as render
from components.render import egress, monitoring
from components.serving import metric_names as m
from tests.conftest import kuberay_crd_schema

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S_VERSION = "1.33"
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}


# --- helpers -----------------------------------------------------------------


@lru_cache(maxsize=None)
def rendered(overlay: str) -> tuple[dict, ...]:
    return tuple(render.render(overlay))


def all_rendered() -> list[dict]:
    return [o for name in render.overlays() for o in rendered(name)]


def find(objects, kind: str, name: str) -> dict:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def pod_specs(obj: dict) -> list[dict]:
    """Every pod spec inside an object (workloads and RayJobs)."""
    if obj["kind"] in WORKLOADS:
        return [obj["spec"]["template"]["spec"]]
    if obj["kind"] == "RayJob":
        cluster = obj["spec"]["rayClusterSpec"]
        specs = [cluster["headGroupSpec"]["template"]["spec"]]
        specs += [g["template"]["spec"] for g in cluster["workerGroupSpecs"]]
        return specs + [obj["spec"]["submitterPodTemplate"]["spec"]]
    return []


def containers(obj: dict) -> list[dict]:
    return [c for spec in pod_specs(obj) for c in spec.get("initContainers", []) + spec["containers"]]


def example_rayjob() -> dict:
    return rayjob.build_rayjob(
        "train-abc123",
        ["servicetime", "train", "--features", "s3://d/f", "--config", "s3://d/c.yaml", "--out", "s3://a/o"],
        num_workers=2,
        cpus_per_worker=1.5,
        memory="3Gi",
        env={"SERVICETIME_SEED": "7"},
        active_deadline_s=3600,
    )


@pytest.fixture(scope="module")
def crd_schema(upstream_root):
    """KubeRay's CRD schemas from the pinned tree, made strict."""
    return lambda plural: strict_schema(kuberay_crd_schema(upstream_root, plural))


def strict_schema(schema):
    """The API server prunes unknown fields silently; in tests an unknown field fails."""
    if isinstance(schema, list):
        return [strict_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict_schema(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


# --- rendered overlays ---------------------------------------------------------


def test_overlays_exist():
    assert "chameleon" in render.overlays()


@pytest.mark.parametrize("overlay", render.overlays())
def test_overlay_objects_validate_against_kubernetes(overlay):
    objects = rendered(overlay)
    assert len(objects) > 30
    for obj in objects:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


@pytest.mark.parametrize("overlay", render.overlays())
def test_every_object_is_in_our_namespaces(overlay):
    ours, registry = platform().namespace, render.registry_namespace()
    objects = rendered(overlay)
    namespaces = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Namespace"}
    # Only the registry's namespace allows privileged pods (for its hostPort) ...
    enforce = {n: o["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] for n, o in namespaces.items()}
    assert enforce == {ours: "restricted", registry: "privileged"}
    assert {o["metadata"]["namespace"] for o in objects if o["kind"] != "Namespace"} == {ours, registry}
    # ... and it holds the registry and nothing else.
    in_registry = {
        (o["kind"], o["metadata"]["name"].rsplit("-", 1)[0] if o["kind"] == "ConfigMap" else o["metadata"]["name"])
        for o in objects
        if o["metadata"].get("namespace") == registry
    }
    assert in_registry == {
        ("Deployment", "registry"),
        ("Service", "registry"),
        ("PersistentVolumeClaim", "registry-data"),
        ("ConfigMap", "registry-env"),
        ("NetworkPolicy", "default-deny-ingress"),
        ("NetworkPolicy", "registry-ingress"),
        # Egress starts from the baseline: deny all, then DNS only (the registry calls no one).
        ("NetworkPolicy", "default-deny-egress"),
        ("NetworkPolicy", "dns-egress"),
    }
    assert {("NetworkPolicy", pol["metadata"]["name"]) for pol in egress.registry_policies()} < in_registry


@pytest.mark.parametrize("overlay", render.overlays())
def test_no_secrets_are_committed(overlay):
    objects = rendered(overlay)
    assert not [o for o in objects if o["kind"] == "Secret"]
    # Credentials appear only as references to Secrets the bootstrap creates.
    text = yaml.safe_dump_all(objects)
    for word in ("password:", "secretKey:", "rootPassword:"):
        assert word not in text


def _all_workloads():
    objects = [o for o in all_rendered() if o["kind"] in WORKLOADS]
    objects += [deploy.build_model_server_deployment("models:/x/1", name=deploy.CANARY), example_rayjob()]
    return objects


def test_images_are_pinned_everywhere():
    for obj in _all_workloads():
        for c in containers(obj):
            name, _, tag = c["image"].rpartition(":")
            assert name and "/" not in tag, f"untagged image {c['image']} in {obj['metadata']['name']}"
            assert tag != "latest", c["image"]


def test_every_container_has_requests_and_limits():
    for obj in _all_workloads():
        for c in containers(obj):
            res = c.get("resources", {})
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(res.get(part, {})), f"{obj['metadata']['name']}/{c['name']} {part}"


def test_every_pod_runs_hardened_and_non_root():
    for obj in _all_workloads():
        for spec in pod_specs(obj):
            pod_sc = spec.get("securityContext", {})
            assert pod_sc.get("runAsNonRoot") is True, obj["metadata"]["name"]
            assert pod_sc.get("runAsUser", 0) > 0
            assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault"
        for c in containers(obj):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, c["name"]
            assert sc["capabilities"]["drop"] == ["ALL"], c["name"]
            assert sc["readOnlyRootFilesystem"] is True, c["name"]


def test_serving_containers_have_probes():
    for obj in all_rendered():
        if obj["kind"] != "Deployment":
            continue
        for c in containers(obj):
            assert "readinessProbe" in c and "livenessProbe" in c, f"{obj['metadata']['name']}/{c['name']}"


def test_platform_facts_reach_the_manifests():
    p = platform()
    objects = rendered(render.DEFAULT_OVERLAY)

    def port(deployment: str, container: str, name: str) -> int:
        c = next(c for c in containers(find(objects, "Deployment", deployment)) if c["name"] == container)
        return next(pt["containerPort"] for pt in c["ports"] if pt["name"] == name)

    assert port("minio", "minio", "s3") == p.ports.s3
    assert port("minio", "minio", "console") == p.ports.s3_console
    assert port("mlflow", "mlflow", "http") == p.ports.mlflow
    assert port("postgres", "postgres", "postgres") == p.ports.postgres
    assert port("prometheus", "prometheus", "http") == p.ports.prometheus
    assert port("grafana", "grafana", "http") == p.ports.grafana
    assert port("model-server", "model-server", "http") == p.ports.model_server
    # Nodes pull registry.servicetime.local:5000 from the control plane's hostPort.
    registry = find(objects, "Deployment", "registry")
    (registry_port,) = containers(registry)[0]["ports"]
    assert registry_port["containerPort"] == registry_port["hostPort"] == p.ports.registry
    assert p.image.repository.startswith(f"registry.servicetime.local:{p.ports.registry}/")
    assert registry["spec"]["template"]["spec"]["nodeSelector"] == {"node-role.kubernetes.io/control-plane": "true"}
    registry_env = next(o for o in objects if o["metadata"]["name"].startswith("registry-env-"))
    assert registry_env["data"]["REGISTRY_HTTP_ADDR"] == f":{p.ports.registry}"

    images = {c["image"] for o in objects if o["kind"] in WORKLOADS for c in containers(o)}
    assert p.image.ref in images
    assert f"docker.io/minio/minio:{p.versions.minio}" in images
    assert f"docker.io/library/postgres:{p.versions.postgres}" in images

    env = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("platform-"))
    assert env["data"]["BUCKETS"].split() == [p.buckets.data, p.buckets.artifacts, p.buckets.kfp]
    assert env["data"]["MLFLOW_TRACKING_URI"] == f"http://mlflow:{p.ports.mlflow}"


def test_mlflow_uses_postgres_minio_and_allows_cluster_hosts():
    mlflow = find(rendered(render.DEFAULT_OVERLAY), "Deployment", "mlflow")
    container = containers(mlflow)[0]
    args = container["args"]
    assert "--app-name=basic-auth" in args
    # The Postgres address is in the env, without a password; libpq reads PGPASSWORD from the Secret.
    assert not any(a.startswith("--backend-store-uri") for a in args)
    assert not any("PASSWORD" in a.upper() or "postgresql://" in a for a in args)
    env_names = [e["name"] for e in container["env"]]
    env = {e["name"]: e for e in container["env"]}
    uri = env["MLFLOW_BACKEND_STORE_URI"]["value"]
    assert uri == "postgresql://$(POSTGRES_USER)@postgres:$(PGPORT)/$(POSTGRES_DB)"
    # $(VAR) expands only from variables defined earlier in the list.
    for var in ("POSTGRES_USER", "POSTGRES_DB"):
        assert env_names.index(var) < env_names.index("MLFLOW_BACKEND_STORE_URI")
        assert env[var]["valueFrom"]["secretKeyRef"] == {"name": "postgres-credentials", "key": var}
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "postgres-credentials",
        "key": "POSTGRES_PASSWORD",
    }
    assert "value" not in env["PGPASSWORD"]
    # MLflow's own least-privilege S3 user, not the pipeline's.
    mlflow_s3 = s3_users.users()["mlflow"].secret
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[key]["valueFrom"]["secretKeyRef"] == {"name": mlflow_s3, "key": key}
    assert "--artifacts-destination=s3://$(ARTIFACTS_BUCKET)" in args
    allowed = next(a for a in args if a.startswith("--allowed-hosts=")).split("=", 1)[1].split(",")
    assert {"mlflow:*", "localhost:*", "mlflow.$(POD_NAMESPACE).svc*"} <= set(allowed)
    assert any(a.startswith("--cors-allowed-origins=") for a in args)


def test_model_server_in_base_is_the_generated_one():
    base = find(rendered(render.DEFAULT_OVERLAY), "Deployment", "model-server")
    built = deploy.build_model_server_deployment(deploy.production_uri())
    assert base["spec"]["template"]["spec"] == built["spec"]["template"]["spec"]
    assert base["spec"]["selector"] == built["spec"]["selector"]
    annotations = base["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(platform().ports.model_server),
        "prometheus.io/path": "/metrics",
    }


def test_network_policies_deny_by_default_and_guard_postgres():
    policies = {o["metadata"]["name"]: o for o in rendered(render.DEFAULT_OVERLAY) if o["kind"] == "NetworkPolicy"}
    deny = policies["default-deny-ingress"]["spec"]
    assert deny["podSelector"] == {} and deny["policyTypes"] == ["Ingress"] and "ingress" not in deny
    postgres = policies["postgres-ingress"]["spec"]["ingress"]
    assert postgres == [
        {
            "from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "mlflow"}}}],
            "ports": [{"port": "postgres", "protocol": "TCP"}],
        }
    ]
    prometheus_from = policies["prometheus-ingress"]["spec"]["ingress"][0]["from"]
    assert {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "grafana"}}} in prometheus_from


def test_pipeline_runner_may_run_rayjobs_and_deploy():
    objects = rendered(render.DEFAULT_OVERLAY)
    role = find(objects, "Role", "pipeline-deployer")
    verbs = {(g, r): set(rule["verbs"]) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
    for resource in ("rayjobs", "rayclusters"):
        assert {"create", "get", "list", "watch", "delete"} <= verbs[("ray.io", resource)]
    assert "get" in verbs[("", "pods/log")]
    assert {"patch", "delete"} <= verbs[("apps", "deployments")]
    binding = find(objects, "RoleBinding", "pipeline-deployer")
    assert {"kind": "ServiceAccount", "name": "pipeline-runner", "namespace": "kubeflow"} in binding["subjects"]


# --- model server and rollout --------------------------------------------------


def test_model_server_deployment_validates():
    for name in (deploy.MODEL_SERVER, deploy.CANARY):
        obj = deploy.build_model_server_deployment("models:/servicetime/3", name=name)
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    kubernetes_validate.validate(deploy.build_model_server_service(), K8S_VERSION, strict=True)


def test_model_server_deployment_shape():
    obj = deploy.build_model_server_deployment("models:/servicetime/3", name=deploy.CANARY, replicas=1)
    c = containers(obj)[0]
    assert c["args"][c["args"].index("--model-uri") + 1] == "models:/servicetime/3"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert obj["spec"]["selector"]["matchLabels"][deploy.TRACK_LABEL] == "canary"
    env = {e["name"]: e for e in c["env"]}
    assert env["MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK"]["value"] == "true"
    # The model server's read-only S3 user, not the pipeline's.
    model_server_s3 = s3_users.users()["model-server"].secret
    assert model_server_s3 != podspec.S3_SECRET
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[key]["valueFrom"]["secretKeyRef"] == {"name": model_server_s3, "key": key}
    assert {v["mountPath"] for v in c["volumeMounts"]} == {"/tmp"}


class FakeApps:
    """AppsV1Api as rollout uses it; deployments become ready unless told otherwise."""

    def __init__(self, stable_image="registry.example:5000/servicetime:0.1.0", never_ready=(), existing_canary=False):
        self.deployments = {deploy.MODEL_SERVER: deploy.build_model_server_deployment(deploy.production_uri(),
                                                                                      image=stable_image)}
        if existing_canary:
            self.deployments[deploy.CANARY] = deploy.build_model_server_deployment("models:/old/1", name=deploy.CANARY)
        self.never_ready = set(never_ready)
        self.calls: list[tuple] = []

    def _get(self, name):
        if name not in self.deployments:
            raise ApiException(status=404)
        return copy.deepcopy(self.deployments[name])

    def read_namespaced_deployment(self, name, namespace):
        return self._get(name)

    def read_namespaced_deployment_status(self, name, namespace):
        dep = self._get(name)
        n = 0 if name in self.never_ready else dep["spec"]["replicas"]
        dep["status"] = {"readyReplicas": n, "updatedReplicas": n}
        return dep

    def create_namespaced_deployment(self, namespace, body):
        self.calls.append(("create", body["metadata"]["name"]))
        if body["metadata"]["name"] in self.deployments:
            raise ApiException(status=409)
        self.deployments[body["metadata"]["name"]] = copy.deepcopy(body)

    def replace_namespaced_deployment(self, name, namespace, body):
        self.calls.append(("replace", name))
        self.deployments[name] = copy.deepcopy(body)

    def patch_namespaced_deployment(self, name, namespace, body):
        """A strategic merge of pod-template annotations (None deletes), as rollout sends."""
        self.calls.append(("patch", name))
        meta = self.deployments[name]["spec"]["template"].setdefault("metadata", {})
        annotations = meta.setdefault("annotations", {})
        for key, value in body["spec"]["template"]["metadata"]["annotations"].items():
            if value is None:
                annotations.pop(key, None)
            else:
                annotations[key] = value

    def delete_namespaced_deployment(self, name, namespace):
        self.calls.append(("delete", name))
        self._get(name)
        del self.deployments[name]


class FakeAlias:
    """The registry's `production` alias, as set_production sees it."""

    def __init__(self, version=None):
        self.version, self.moves = version, []

    def __call__(self, to):
        previous, self.version = self.version, to
        self.moves.append(to)
        return previous


def fake_prometheus(values: dict[str, float | None]):
    queries = deploy.canary_queries("60s")
    by_query = {queries[k]: v for k, v in values.items()}
    seen = []

    def query(promql):
        seen.append(promql)
        return by_query[promql]

    query.seen = seen
    return query


def model_uri_of(apps: FakeApps, name: str) -> str:
    args = apps.deployments[name]["spec"]["template"]["spec"]["containers"][0]["args"]
    return args[args.index("--model-uri") + 1]


def served_version(apps: FakeApps) -> str | None:
    meta = apps.deployments[deploy.MODEL_SERVER]["spec"]["template"].get("metadata", {})
    return (meta.get("annotations") or {}).get(deploy.VERSION_ANNOTATION)


def run_rollout(apps, query, alias=None, **kwargs):
    return deploy.rollout(
        "models:/servicetime/7", "servicetime", "http://prometheus:9090", 30,
        apps_api=apps, query=query, sleep=lambda s: None, set_production=alias or FakeAlias("6"), **kwargs,
    )


HEALTHY = {"requests_per_s": 3.0, "error_ratio": 0.0, "fallback_ratio": 0.01}


def test_stable_follows_production_not_champion():
    """register moves `champion` before the canary; a stable server following it would be the candidate."""
    stable = find(rendered(render.DEFAULT_OVERLAY), "Deployment", deploy.MODEL_SERVER)
    args = containers(stable)[0]["args"]
    assert args[args.index("--model-uri") + 1] == deploy.production_uri()
    assert "@champion" not in deploy.production_uri()


def test_rollout_promotes_a_healthy_canary():
    apps, alias = FakeApps(), FakeAlias("6")
    query = fake_prometheus(HEALTHY)
    result = run_rollout(apps, query, alias)
    assert result["promoted"] is True, result
    assert alias.version == "7" and served_version(apps) == "7"
    assert model_uri_of(apps, deploy.MODEL_SERVER) == deploy.production_uri()  # re-applying the base keeps it
    assert deploy.CANARY not in apps.deployments
    assert ("create", deploy.CANARY) in apps.calls and ("patch", deploy.MODEL_SERVER) in apps.calls
    assert all('track="canary"' in q and f'job="{m.SCRAPE_JOB}"' in q for q in query.seen)


def test_rollout_canary_runs_the_candidate_version_on_the_stable_image():
    apps = FakeApps(stable_image="registry.example:5000/servicetime:9.9.9")
    seen = {}
    original = apps.create_namespaced_deployment

    def spy(namespace, body):
        seen["body"] = copy.deepcopy(body)
        return original(namespace, body)

    apps.create_namespaced_deployment = spy
    run_rollout(apps, fake_prometheus(HEALTHY))
    canary = seen["body"]["spec"]["template"]["spec"]["containers"][0]
    assert canary["image"] == "registry.example:5000/servicetime:9.9.9"
    assert canary["args"][canary["args"].index("--model-uri") + 1] == "models:/servicetime/7"


@pytest.mark.parametrize(
    "values, reason",
    [
        ({"requests_per_s": 5.0, "error_ratio": 0.2, "fallback_ratio": 0.0}, "error ratio"),
        ({"requests_per_s": 5.0, "error_ratio": 0.0, "fallback_ratio": 0.5}, "fallback ratio"),
    ],
)
def test_rollout_rolls_back_an_unhealthy_canary(values, reason):
    apps, alias = FakeApps(), FakeAlias("6")
    result = run_rollout(apps, fake_prometheus(values), alias)
    assert result["promoted"] is False
    assert any(reason in r for r in result["reasons"])
    assert alias.moves == [] and served_version(apps) is None
    assert deploy.CANARY not in apps.deployments


def test_rollout_rolls_back_a_canary_that_never_gets_ready():
    apps, alias = FakeApps(never_ready={deploy.CANARY}), FakeAlias("6")
    clock = iter(range(0, 10_000, 100))
    result = deploy.rollout(
        "models:/servicetime/7", "servicetime", "http://p:9090", 30, apps_api=apps,
        query=lambda q: pytest.fail("no query before the canary is ready"), set_production=alias,
        sleep=lambda s: None, clock=lambda: next(clock), ready_timeout_s=300,
    )
    assert result["promoted"] is False and "not ready" in result["reasons"][0]
    assert deploy.CANARY not in apps.deployments and alias.moves == []


def test_rollout_reverts_production_when_stable_fails_on_the_new_model():
    apps, alias = FakeApps(never_ready={deploy.MODEL_SERVER}), FakeAlias("6")
    clock = iter(range(0, 10_000, 100))
    result = deploy.rollout(
        "models:/servicetime/7", "servicetime", "http://p:9090", 30, apps_api=apps, query=fake_prometheus(HEALTHY),
        set_production=alias, sleep=lambda s: None, clock=lambda: next(clock), ready_timeout_s=300,
    )
    assert result["promoted"] is False and "reverted" in result["reasons"][-1]
    assert alias.version == "6" and alias.moves == ["7", "6"] and served_version(apps) is None


def test_rollout_with_synthetic_traffic_requires_that_the_canary_saw_it():
    seen = []

    def traffic(seconds):
        seen.append(seconds)
        return {"sent": 150, "ok": 150, "errors": {}}

    silent = fake_prometheus({"requests_per_s": None, "error_ratio": None, "fallback_ratio": None})
    result = run_rollout(FakeApps(), silent, traffic=traffic)
    assert seen == [30] and result["promoted"] is False and "no canary traffic" in result["reasons"][-1]
    assert run_rollout(FakeApps(), fake_prometheus(HEALTHY), traffic=traffic)["promoted"] is True


def test_rollout_replaces_a_leftover_canary_and_handles_no_traffic():
    apps = FakeApps(existing_canary=True)
    query = fake_prometheus({"requests_per_s": None, "error_ratio": None, "fallback_ratio": None})
    result = run_rollout(apps, query)
    assert ("replace", deploy.CANARY) in apps.calls
    assert result["promoted"] is True and any("no canary traffic" in r for r in result["reasons"])
    strict = run_rollout(FakeApps(), query, require_traffic=True)
    assert strict["promoted"] is False


def test_drive_traffic_posts_the_bodies_to_a_real_server():
    import http.server
    import threading

    got = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200 if len(got) % 2 else 422)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/predict"
        ticks = iter(range(100))
        out = deploy.drive_traffic(url, [b'{"stops": [1]}', b'{"stops": [2]}'], 5, clock=lambda: next(ticks),
                                   sleep=lambda s: None)
    finally:
        server.shutdown()
        server.server_close()
    assert out["sent"] == len(got) == 4 and out["ok"] == 2 and out["errors"] == {"HTTPError": 2}
    assert [g["stops"][0] for g in got] == [1, 2, 1, 2]


# --- RayJob --------------------------------------------------------------------


def test_rayjob_validates_against_the_kuberay_crd(crd_schema):
    job = example_rayjob()
    jsonschema.validate(job, crd_schema("rayjobs"))
    cluster = {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": "train-abc123"},
        "spec": job["spec"]["rayClusterSpec"],
    }
    jsonschema.validate(cluster, crd_schema("rayclusters"))


def test_strict_crd_schema_catches_unknown_fields(crd_schema):
    job = example_rayjob()
    job["spec"]["shutdownAfterJobFinish"] = True  # a typo the API server would prune silently
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(job, crd_schema("rayjobs"))


def test_rayjob_shape():
    job = example_rayjob()
    spec = job["spec"]
    assert spec["entrypoint"].startswith("servicetime train --features s3://d/f")
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0
    assert spec["activeDeadlineSeconds"] == 3600
    workers = spec["rayClusterSpec"]["workerGroupSpecs"]
    assert len(workers) == 1 and workers[0]["replicas"] == workers[0]["minReplicas"] == workers[0]["maxReplicas"] == 2
    worker = workers[0]["template"]["spec"]["containers"][0]
    assert worker["resources"]["limits"] == {"cpu": "1500m", "memory": "3Gi"}
    assert worker["image"] == platform().image.ref
    env = {e["name"]: e for e in worker["env"]}
    assert env["SERVICETIME_SEED"]["value"] == "7"
    # Ray's own S3 user (train inputs and checkpoints only), on the workers and the head alike.
    ray_s3 = s3_users.users()["ray"].secret
    assert ray_s3 != podspec.S3_SECRET
    head = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    for pod_env in (env, {e["name"]: e for e in head["env"]}):
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert pod_env[key]["valueFrom"]["secretKeyRef"] == {"name": ray_s3, "key": key}
    assert env["MLFLOW_TRACKING_URI"]["value"] == f"http://mlflow:{platform().ports.mlflow}"
    override = rayjob.build_rayjob("t", ["x"], 1, 1, "1Gi", {"MLFLOW_TRACKING_URI": "http://elsewhere"}, image="a/b:1")
    head = override["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert [e["value"] for e in head["env"] if e["name"] == "MLFLOW_TRACKING_URI"] == ["http://elsewhere"]
    assert head["image"] == "a/b:1"


class FakeCustomObjects:
    def __init__(self, statuses, conflict=False):
        self.statuses = list(statuses)
        self.conflict = conflict
        self.created, self.deleted = [], []

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        assert (group, version, plural) == ("ray.io", "v1", "rayjobs")
        if self.conflict:
            self.conflict = False
            raise ApiException(status=409)
        self.created.append(body["metadata"]["name"])

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return {"metadata": {"name": name}, "status": status}

    def delete_namespaced_custom_object(self, group, version, namespace, plural, name):
        self.deleted.append(name)


class FakeCore:
    def __init__(self, log="driver says hi\n"):
        self.log = log
        self.selectors = []

    def list_namespaced_pod(self, namespace, label_selector):
        self.selectors.append(label_selector)
        return {"items": [{"metadata": {"name": "train-abc123-xyz"}}]}

    def read_namespaced_pod_log(self, name, namespace, tail_lines):
        assert name == "train-abc123-xyz"
        return self.log


def test_run_rayjob_succeeds_and_cleans_up():
    api = FakeCustomObjects(
        [{}, {"jobDeploymentStatus": "Initializing"}, {"jobStatus": "RUNNING", "jobDeploymentStatus": "Running"},
         {"jobStatus": "SUCCEEDED", "jobDeploymentStatus": "Complete"}]
    )
    core = FakeCore()
    result = rayjob.run_rayjob(example_rayjob(), "servicetime", 600, api=api, core_api=core, sleep=lambda s: None)
    assert result["job_status"] == "SUCCEEDED" and result["logs"] == "driver says hi\n"
    assert api.created == ["train-abc123"] and api.deleted == ["train-abc123"]
    assert core.selectors == ["job-name=train-abc123"]


def test_run_rayjob_raises_on_failure_with_the_log():
    api = FakeCustomObjects([{"jobStatus": "FAILED", "jobDeploymentStatus": "Failed", "message": "OOMKilled"}])
    with pytest.raises(RuntimeError, match="failed.*OOMKilled(.|\n)*Traceback"):
        rayjob.run_rayjob(
            example_rayjob(), "servicetime", 600, api=api, core_api=FakeCore("Traceback: boom\n"), sleep=lambda s: None
        )
    assert api.deleted == ["train-abc123"]


def test_run_rayjob_times_out_and_replaces_a_leftover():
    api = FakeCustomObjects([{"jobStatus": "RUNNING"}], conflict=True)
    clock = iter(range(0, 100_000, 50))
    with pytest.raises(RuntimeError, match="did not finish within 120s"):
        rayjob.run_rayjob(
            example_rayjob(), "servicetime", 120, api=api, core_api=FakeCore(), sleep=lambda s: None,
            clock=lambda: next(clock),
        )
    # The leftover was deleted before creating anew, and the job after the timeout.
    assert api.deleted == ["train-abc123", "train-abc123"] and api.created == ["train-abc123"]


# --- scripts and image ---------------------------------------------------------


SHELL_FILES = sorted((REPO_ROOT / "infra").glob("*.sh"))
SCRIPTS = [f for f in SHELL_FILES if f.read_text().startswith("#!")]  # the rest are sourced libraries


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed (make system-deps)")
@pytest.mark.parametrize("script", SHELL_FILES, ids=[s.name for s in SHELL_FILES])
def test_shellcheck(script):
    # -x follows `source infra/platform.sh`, resolved from the repository root.
    proc = subprocess.run(["shellcheck", "-x", "--severity=style", str(script)], capture_output=True, text=True,
                          cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_scripts_are_strict():
    assert SCRIPTS
    for script in SCRIPTS:
        assert "set -euo pipefail" in script.read_text(), script.name


def test_build_image_pushes_the_platform_tag():
    env = {**os.environ, "PYTHON": sys.executable}  # the script reads platform.yaml with PyYAML
    out = subprocess.run(
        ["bash", str(REPO_ROOT / "infra/build_image.sh"), "--print"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout.split("\n")
    p = platform()
    assert out[0] == f"image {p.image.ref}"
    assert out[1] == f"registry {p.image.repository.split('/')[0]}"


def test_dockerfile_is_pinned_cpu_and_non_root():
    text = (REPO_ROOT / "infra/Dockerfile").read_text()
    base = next(line.split()[1] for line in text.splitlines() if line.startswith("FROM "))
    assert base.startswith("python:3.11.") and "slim" in base and "latest" not in base
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in text
    assert "-c requirements.lock '.[cluster]'" in text
    assert "USER 1000:1000" in text and 'ENTRYPOINT ["servicetime"]' in text
    assert platform().image.tag not in text  # the tag lives in platform.yaml only


# --- monitoring ----------------------------------------------------------------


def test_committed_monitoring_files_equal_a_fresh_render():
    for name, text in monitoring.cluster_files().items():
        path = REPO_ROOT / monitoring.MONITORING / name
        assert path.read_text() == text, f"{path} is stale: run python -m components.render.monitoring"


def _promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *args], capture_output=True, text=True)


def _check_config(path: Path) -> None:
    proc = _promtool("check", "config", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (make system-deps)")
def test_promtool_accepts_rules_and_configs(tmp_path):
    rules = tmp_path / "alerts.yml"
    rules.write_text(monitoring.render_alert_rules())
    proc = _promtool("check", "rules", str(rules))
    assert proc.returncode == 0, proc.stdout + proc.stderr

    local = tmp_path / "local.yml"
    local.write_text(monitoring.render_prometheus_config(["127.0.0.1:8080"], [str(rules)], kubernetes_sd=False))
    _check_config(local)

    cluster = tmp_path / "cluster.yml"
    cluster.write_text(monitoring.render_prometheus_config([], [str(rules)], kubernetes_sd=True))
    proc = _promtool("check", "config", str(cluster))
    if "kubernetes_sd_configs not found" in proc.stdout + proc.stderr:
        # Debian builds Prometheus without Kubernetes discovery. Check everything
        # else (relabel rules included) with the discovery block swapped for a
        # static one; the discovery block itself is asserted below.
        config = yaml.safe_load(cluster.read_text())
        job = config["scrape_configs"][0]
        assert job.pop("kubernetes_sd_configs") == [{"role": "pod", "namespaces": {"names": [platform().namespace]}}]
        job["static_configs"] = [{"targets": ["10.42.0.10:8080"]}]
        cluster.write_text(yaml.safe_dump(config))
        _check_config(cluster)
    else:
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_scrape_config_keeps_annotated_model_server_pods_with_track():
    config = yaml.safe_load(monitoring.render_prometheus_config([], ["a.yml"], kubernetes_sd=True))
    job = config["scrape_configs"][0]
    assert job["job_name"] == m.SCRAPE_JOB
    relabel = {tuple(r["source_labels"]): r for r in job["relabel_configs"]}
    assert relabel[("__meta_kubernetes_pod_annotation_prometheus_io_scrape",)]["action"] == "keep"
    assert relabel[("__meta_kubernetes_pod_label_servicetime_io_track",)]["target_label"] == "track"
    assert "__meta_kubernetes_pod_label_servicetime_io_track" == "__meta_kubernetes_pod_label_" + (
        deploy.TRACK_LABEL.replace(".", "_").replace("/", "_")
    )


def test_alerts_cover_the_failure_modes_and_use_metric_names():
    rules = {r["alert"]: r["expr"] for r in monitoring.alert_rules()}
    assert m.REQUEST_LATENCY + "_bucket" in rules["ServicetimeHighP99Latency"]
    assert m.REQUESTS + "_total" in rules["ServicetimeHighErrorRatio"]
    assert m.PREDICTIONS + "_total" in rules["ServicetimeFallbackActive"]
    assert m.INPUT_DRIFT_PSI in rules["ServicetimeInputDrift"]
    assert m.MODEL_DATA_AGE in rules["ServicetimeStaleModel"] and "time()" not in rules["ServicetimeStaleModel"]
    assert m.MODEL_LOADED in rules["ServicetimeModelNotLoaded"]


def test_dashboard_panels_query_our_metrics():
    dashboard = json.loads(monitoring.render_dashboard())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for metric in (m.REQUESTS, m.REQUEST_LATENCY, m.PREDICTIONS, m.FALLBACKS, m.PREDICTED_SERVICE_TIME,
                   m.INPUT_DRIFT_PSI, m.MODEL_INFO, m.MODEL_LOADED_TIMESTAMP, m.MODEL_DATA_AGE):
        assert metric in exprs, metric
    assert {p["datasource"]["uid"] for p in dashboard["panels"]} == {"prometheus"}
    provisioned = yaml.safe_load((REPO_ROOT / "k8s/base/grafana/datasources.yaml").read_text())
    assert provisioned["datasources"][0]["uid"] == "prometheus"
