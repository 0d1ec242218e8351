"""The whole cluster install as one system, offline: what infra/bootstrap.sh applies, checked together.

Each file of k8s/, infra/ and components/cluster/ can be right alone and the install still
fail (KubeRay landing in a namespace nothing waits in, a NetworkPolicy that shuts out
the operator). These tests render everything, upstream included, from the pinned trees
(``SERVICETIME_UPSTREAM`` or the cache; skipped with the reason where neither is there),
and check flows between pods, namespaces, RBAC, schemas and pins across the whole.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest

from components.cluster import deploy, podspec, rayjob
from components.core.platform import platform
from components.render import cluster as render
from components.render import install, reachability, upstream
from components.render.reachability import Endpoint, Network, Pod
from tests.infra.test_k8s import strict_schema

REPO_ROOT = Path(__file__).resolve().parents[2]
BOOTSTRAP = REPO_ROOT / "infra" / "bootstrap.sh"
K8S_VERSION = "1.33"
NS = platform().namespace
KFP_NS = platform().namespaces.kfp
KUBERAY_NS = platform().namespaces.kuberay


def find(objects, kind, name, namespace=None):
    hits = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name
            and (namespace is None or o["metadata"].get("namespace") == namespace)]
    assert hits, f"no {kind} {namespace}/{name} in the render"
    return hits[0]


def pod(pods, name, namespace) -> Pod:
    hits = [p for p in pods if p.name == name and p.namespace == namespace]
    assert hits, f"no pod {namespace}/{name}; have {[p.name for p in pods if p.namespace == namespace]}"
    return hits[0]


# --- the render itself --------------------------------------------------------------------------


def test_render_holds_every_part_and_no_remote_reference(objects):
    names = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects}
    for must in [("Deployment", KFP_NS, "ml-pipeline"), ("Deployment", KFP_NS, "ml-pipeline-ui"),
                 ("Deployment", KFP_NS, "workflow-controller"), ("Deployment", KUBERAY_NS, "kuberay-operator"),
                 ("CustomResourceDefinition", None, "rayjobs.ray.io"),
                 ("CustomResourceDefinition", None, "workflows.argoproj.io"),
                 ("Deployment", NS, "minio"), ("Deployment", NS, "mlflow"), ("Deployment", NS, "model-server"),
                 ("RayJob", NS, "train-sample-run"), ("Deployment", NS, deploy.CANARY)]:
        assert must in names, must
    # Cluster-scoped kinds first, so one `kubectl apply -f` in order works.
    kinds = [o["kind"] for o in objects]
    last_first = max(i for i, k in enumerate(kinds) if k in install.FIRST)
    assert all(k in install.FIRST for k in kinds[: last_first + 1])


def test_argo_refs_map_to_the_pinned_tree(upstream_root, tmp_path):
    """KFP names Argo by remote URL; every such reference becomes the local pinned tree."""
    tree = {t.key: t for t in upstream.trees()}
    kfp = tmp_path / "kfp"
    import shutil

    shutil.copytree(upstream_root / tree["kfp"].folder / "manifests" / "kustomize", kfp)
    assert install.localize_argo_refs(kfp, upstream_root / tree["argo"].folder) >= 4
    left = [p for p in kfp.rglob("kustomization.yaml") if "github.com/argoproj" in
            "\n".join(line for line in p.read_text().splitlines() if not line.lstrip().startswith("#"))]
    assert left == []


def test_every_namespaced_object_lands_in_a_namespace_the_install_creates(objects):
    created = {o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"}
    assert {NS, KFP_NS, KUBERAY_NS} <= created
    cluster_scoped = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding", "PriorityClass",
                      "PersistentVolume"}
    for o in objects:
        if o["kind"] not in cluster_scoped:
            assert o["metadata"].get("namespace") in created, (o["kind"], o["metadata"]["name"])


def test_bootstrap_waits_only_for_what_the_install_has(objects):
    """Each `rollout status` / `wait` of the bootstrap names a Deployment or Job of the render, in its namespace."""
    text = BOOTSTRAP.read_text()
    variables = {
        "NS": NS, "KFP_NS": KFP_NS, "KUBERAY_NS": KUBERAY_NS, "REGISTRY_NS": f"{NS}-registry",
    }
    for name, value in re.findall(r'^(\w+_NS|NS)="\$\(platform ([\w.]+)\)"', text, re.M):
        assert name in variables
        key = value.split(".")
        got = platform().model_dump()
        for k in key:
            got = got[k]
        assert got == variables[name], f"bootstrap's {name} is {got}, expected {variables[name]}"
    waits = re.findall(r'wait_ready "\$(\w+)" (?:deployment/|"deployment/)([\w$-]+)', text)
    waits += [("NS", d) for d in re.search(r"for deployment in ([\w -]+); do", text)[1].split()]
    jobs = re.findall(r'kc -n "\$(\w+)" wait --for=condition=complete job/([\w-]+)', text)
    assert {name for _, name in jobs} == {"minio-setup", "state-folders"}
    checked = 0
    for var, name in waits + [(v, f"job:{n}") for v, n in jobs]:
        if name.startswith("$"):
            continue
        kind, name = ("Job", name[4:]) if name.startswith("job:") else ("Deployment", name)
        find(objects, kind, name, variables[var])
        checked += 1
    assert checked >= 8
    # The KFP wait iterates what is there; KubeRay's wait is in the namespace the operator is rendered into.
    assert find(objects, "Deployment", "kuberay-operator")["metadata"]["namespace"] == KUBERAY_NS


def test_secrets_that_pods_read_are_created_by_the_bootstrap(objects):
    text = BOOTSTRAP.read_text()
    created = {
        (("NS" if ns == "$NS" else ns), name) for ns, name in re.findall(r'ensure_secret "([^"]+)" ([\w-]+)', text)
    }
    created = {(NS, n) for _, n in created} | {(KFP_NS, podspec.S3_SECRET)}  # copy_s3_secret_to_kfp
    copied = re.search(r"for name in ([\w -]+); do", text).group(1).split()  # ...and the Secrets it copies as they are
    created |= {(KFP_NS, n) for n in copied}
    assert set(install.secret_names()[KFP_NS]) == {podspec.S3_SECRET, *copied}
    created |= set(UPSTREAM_RUNTIME_SECRETS)
    rendered = {(o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects if o["kind"] == "Secret"}
    for o in objects:
        for spec in _pod_specs(o):
            ns = o["metadata"].get("namespace")
            for ref in _secret_refs(spec):
                assert (ns, ref) in created | rendered, f"{o['kind']} {ns}/{o['metadata']['name']} reads Secret {ref}"
    assert set(install.secret_names()[NS]) <= {n for _, n in created}


# Secrets upstream components make for themselves once running.
UPSTREAM_RUNTIME_SECRETS = {(KFP_NS, "webhook-server-tls"): "KFP's cache-deployer generates the webhook certificate"}


def _pod_specs(obj: dict) -> list[dict]:
    if obj["kind"] in reachability.WORKLOAD_KINDS:
        return [obj["spec"]["template"]["spec"]]
    if obj["kind"] == "RayJob":
        c = obj["spec"]["rayClusterSpec"]
        return [c["headGroupSpec"]["template"]["spec"], *[g["template"]["spec"] for g in c["workerGroupSpecs"]],
                obj["spec"]["submitterPodTemplate"]["spec"]]
    return []


def _containers(spec: dict) -> list[dict]:
    return spec.get("initContainers", []) + spec["containers"]


def _secret_refs(spec: dict) -> set[str]:
    refs = {v["secret"]["secretName"] for v in spec.get("volumes", []) if "secret" in v}
    for c in _containers(spec):
        refs |= {
            e["valueFrom"]["secretKeyRef"]["name"] for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})
        }
        refs |= {e["secretRef"]["name"] for e in c.get("envFrom", []) if "secretRef" in e}
    return refs


def test_configmaps_service_accounts_and_claims_exist(objects):
    def have(kind, ns):
        return {o["metadata"]["name"] for o in objects if o["kind"] == kind and o["metadata"].get("namespace") == ns}

    for o in objects:
        ns = o["metadata"].get("namespace")
        for spec in _pod_specs(o):
            sa = spec.get("serviceAccountName")
            assert sa is None or sa in have("ServiceAccount", ns), (o["metadata"]["name"], sa)
            for v in spec.get("volumes", []):
                if "configMap" in v and not v["configMap"].get("optional"):
                    assert v["configMap"]["name"] in have("ConfigMap", ns), (o["metadata"]["name"], v)
                if "persistentVolumeClaim" in v:
                    assert v["persistentVolumeClaim"]["claimName"] in have("PersistentVolumeClaim", ns)
            for c in _containers(spec):
                for e in c.get("envFrom", []):
                    if "configMapRef" in e and not e["configMapRef"].get("optional"):
                        assert e["configMapRef"]["name"] in have("ConfigMap", ns), (o["metadata"]["name"], e)


def test_cluster_role_bindings_name_service_accounts_that_exist(objects):
    accounts = {
        (o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects if o["kind"] == "ServiceAccount"
    }
    for b in (o for o in objects if o["kind"] in ("ClusterRoleBinding", "RoleBinding")):
        for s in b.get("subjects", []):
            if s["kind"] == "ServiceAccount":
                ns = s.get("namespace", b["metadata"].get("namespace"))
                assert (ns, s["name"]) in accounts, (
                    f"{b['kind']} {b['metadata']['name']} binds missing {ns}/{s['name']}"
                )


def test_every_service_selects_pods(objects, pods):
    for svc in (o for o in objects if o["kind"] == "Service"):
        if svc["spec"].get("type") == "ExternalName" or not svc["spec"].get("selector"):
            continue
        for port in svc["spec"]["ports"]:
            backends = reachability.service_backends(objects, pods, svc["metadata"]["name"],
                                                     svc["metadata"]["namespace"], port.get("name"))
            assert backends, f"Service {svc['metadata']['namespace']}/{svc['metadata']['name']} selects no pod"
            for backend, target in backends:
                if isinstance(target, str):
                    assert target in backend.ports, f"{backend.name} lacks port {target!r} of {svc['metadata']['name']}"


# --- who may talk to whom -----------------------------------------------------------------------

PIPELINE_POD = Pod("Workflow/pipeline-step", KFP_NS, {"workflows.argoproj.io/workflow": "servicetime-x",
                                                      "pipelines.kubeflow.org/v2_component": "true"})
STRANGERS = [Pod("stranger/app", "stranger", {"app": "x"}),
             # Same labels as our own pods, other namespace: a bare podSelector must not admit it.
             Pod("stranger/impostor", "stranger", {"app.kubernetes.io/name": "mlflow"}),
             Pod("stranger/ray", "stranger", {"app.kubernetes.io/name": "ray", "ray.io/is-ray-node": "yes"})]


def _via_service(objects, pods, network, src: Pod, service: str, namespace: str, port: str) -> bool:
    backends = reachability.service_backends(objects, pods, service, namespace, port)
    assert backends, f"{namespace}/{service} has no backends"
    return all(network.allows(src, dst, target) for dst, target in backends)


def required_flows(pods):
    ray = [p for p in pods if p.name.startswith("RayJob/")]
    head = next(p for p in ray if p.name.endswith("/head"))
    worker = next(p for p in ray if p.name.endswith("/workers"))
    submitter = next(p for p in ray if p.name.endswith("/submitter"))
    ours = {n: pod(pods, f"Deployment/{n}", NS) for n in ("mlflow", "grafana", "prometheus", "model-server")}
    return [
        # (who, service or pod, namespace, port)
        ("pipeline pods -> MinIO", PIPELINE_POD, ("svc", "minio", NS, "s3")),
        ("pipeline pods -> MLflow", PIPELINE_POD, ("svc", "mlflow", NS, "http")),
        ("pipeline pods -> model server (canary traffic)", PIPELINE_POD, ("svc", deploy.MODEL_SERVER, NS, "http")),
        ("pipeline pods -> Prometheus (canary gate)", PIPELINE_POD, ("svc", "prometheus", NS, "http")),
        ("KFP API server -> MinIO", pod(pods, "Deployment/ml-pipeline", KFP_NS), ("svc", "minio", NS, "s3")),
        (
            "KFP UI -> MinIO (minio-external)",
            pod(pods, "Deployment/ml-pipeline-ui", KFP_NS),
            ("svc", "minio-external", KFP_NS, "s3"),
        ),
        (
            "Argo controller -> MinIO (logs)",
            pod(pods, "Deployment/workflow-controller", KFP_NS),
            ("svc", "minio", NS, "s3"),
        ),
        ("Ray head -> MinIO", head, ("svc", "minio", NS, "s3")),
        ("Ray worker -> MinIO", worker, ("svc", "minio", NS, "s3")),
        ("Ray head -> MLflow", head, ("svc", "mlflow", NS, "http")),
        ("Ray worker -> head GCS", worker, ("pod", head, "gcs")),
        ("Ray head -> worker (any port)", head, ("pod", worker, 10002)),
        ("submitter -> head dashboard", submitter, ("pod", head, "dashboard")),
        (
            "KubeRay operator -> head dashboard",
            pod(pods, "Deployment/kuberay-operator", KUBERAY_NS),
            ("pod", head, "dashboard"),
        ),
        ("Prometheus -> model server", ours["prometheus"], ("svc", deploy.MODEL_SERVER, NS, "http")),
        ("model server -> MLflow", ours["model-server"], ("svc", "mlflow", NS, "http")),
        ("model server -> MinIO", ours["model-server"], ("svc", "minio", NS, "s3")),
        ("MLflow -> Postgres", ours["mlflow"], ("svc", "postgres", NS, "postgres")),
        ("MLflow -> MinIO", ours["mlflow"], ("svc", "minio", NS, "s3")),
        ("Grafana -> Prometheus", ours["grafana"], ("svc", "prometheus", NS, "http")),
    ]


def test_every_flow_the_platform_needs_is_open(objects, pods, network):
    closed = []
    for label, src, (how, *target) in required_flows(pods):
        if how == "svc":
            ok = _via_service(objects, pods, network, src, *target)
        else:
            dst, port = target
            ok = network.allows(src, dst, port)
        if not ok:
            closed.append(label)
    assert closed == []


@pytest.mark.parametrize("service, port", [("minio", "s3"), ("mlflow", "http"), ("postgres", "postgres"),
                                           ("minio", "console")])
def test_a_pod_of_another_namespace_reaches_no_data_store(objects, pods, network, service, port):
    for stranger in STRANGERS:
        assert not _via_service(objects, pods, network, stranger, service, NS, port), (stranger.name, service)


def test_only_mlflow_reaches_postgres(objects, pods, network):
    others = [p for p in pods if p.namespace in (NS, KFP_NS, KUBERAY_NS) and p.name != "Deployment/mlflow"]
    assert others
    for src in others:
        assert not _via_service(objects, pods, network, src, "postgres", NS, "postgres"), src.name


def test_the_old_defect_is_caught():
    """KubeRay in `default` (upstream's namespace) could not reach a head that admits only ray-system."""
    policy = {"kind": "NetworkPolicy", "metadata": {"name": "ray-ingress", "namespace": NS},
              "spec": {"podSelector": {"matchLabels": {"ray.io/is-ray-node": "yes"}}, "policyTypes": ["Ingress"],
                       "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {
                           "kubernetes.io/metadata.name": KUBERAY_NS}}}]}]}}
    head = Pod("head", NS, {"ray.io/is-ray-node": "yes"}, {"dashboard": 8265})
    net = Network([policy], extra_namespaces=[NS, KUBERAY_NS])
    assert net.allows(Pod("op", KUBERAY_NS, {"app.kubernetes.io/name": "kuberay"}), head, "dashboard")
    assert not net.allows(Pod("op", "default", {"app.kubernetes.io/name": "kuberay"}), head, "dashboard")


# --- RBAC covers the calls the code makes ----------------------------------------------------------

# kubernetes-client method -> (API group, resource, verb)
CALLS = {
    "create_namespaced_custom_object": ("ray.io", "rayjobs", "create"),
    "get_namespaced_custom_object": ("ray.io", "rayjobs", "get"),
    "delete_namespaced_custom_object": ("ray.io", "rayjobs", "delete"),
    "list_namespaced_pod": ("", "pods", "list"),
    "read_namespaced_pod_log": ("", "pods/log", "get"),
    "read_namespaced_deployment": ("apps", "deployments", "get"),
    "read_namespaced_deployment_status": ("apps", "deployments/status", "get"),
    "create_namespaced_deployment": ("apps", "deployments", "create"),
    "replace_namespaced_deployment": ("apps", "deployments", "update"),
    "patch_namespaced_deployment": ("apps", "deployments", "patch"),
    "delete_namespaced_deployment": ("apps", "deployments", "delete"),
}


class Recorder:
    """Any kubernetes API object: records (method, namespace, name) and answers like a healthy cluster."""

    def __init__(self, calls):
        self.calls = calls
        self.deployments = {deploy.MODEL_SERVER: deploy.build_model_server_deployment(deploy.production_uri())}

    def __getattr__(self, method):
        assert method in CALLS, f"the code calls {method}, which this test does not map to RBAC"

        def call(*args, **kwargs):
            ns, name, body = self._parse(method, args)
            self.calls.append((method, ns, name))
            if method == "get_namespaced_custom_object":
                return {"status": {"jobStatus": "SUCCEEDED", "jobDeploymentStatus": "Complete"}}
            if method == "list_namespaced_pod":
                return {"items": [{"metadata": {"name": "submitter-1"}}]}
            if method == "read_namespaced_pod_log":
                return "ok"
            if method in ("read_namespaced_deployment", "read_namespaced_deployment_status"):
                dep = dict(self.deployments.get(name) or deploy.build_canary("models:/m/1", "img"))
                dep["status"] = {"readyReplicas": 9, "updatedReplicas": 9}
                return dep
            return body

        return call

    @staticmethod
    def _parse(method, args):
        if method.endswith("custom_object"):  # group, version, namespace, plural, (body | name)
            body = args[4] if method.startswith("create") else None
            return args[2], (body["metadata"]["name"] if body else args[4]), body
        if method.startswith("create"):  # namespace, body
            return args[0], args[1]["metadata"]["name"], args[1]
        if method == "list_namespaced_pod":
            return args[0], None, None
        return args[1], args[0], (args[2] if len(args) > 2 else None)


def _allowed(objects, subject, namespace, group, resource, verb, name):
    roles = {(o["metadata"].get("namespace"), o["metadata"]["name"]): o for o in objects if o["kind"] == "Role"}
    for b in (o for o in objects if o["kind"] == "RoleBinding" and o["metadata"].get("namespace") == namespace):
        if subject not in [(s.get("namespace"), s["name"]) for s in b["subjects"] if s["kind"] == "ServiceAccount"]:
            continue
        role = roles.get((namespace, b["roleRef"]["name"]))
        for rule in (role or {}).get("rules", []):
            if (group in rule.get("apiGroups", []) and resource in rule.get("resources", [])
                    and verb in rule.get("verbs", [])
                    and (not rule.get("resourceNames") or name in rule["resourceNames"])):
                return True
    return False


def test_rbac_covers_every_api_call_of_the_pipeline_steps(objects):
    calls: list[tuple] = []
    api = Recorder(calls)
    manifest = next(o for o in objects if o["kind"] == "RayJob")
    rayjob.run_rayjob(manifest, NS, 60, api=api, core_api=api, sleep=lambda s: None)
    deploy.rollout("models:/servicetime/3", NS, "http://prometheus", 1, apps_api=api,
                   query=lambda q: 1.0 if "requests" in q and "/" not in q else 0.0,
                   set_production=lambda v: None, sleep=lambda s: None)
    assert {c[0] for c in calls} >= {"create_namespaced_custom_object", "read_namespaced_pod_log",
                                     "create_namespaced_deployment", "patch_namespaced_deployment"}
    runner = (KFP_NS, "pipeline-runner")
    missing = [c for c in calls if not _allowed(objects, runner, c[1], *CALLS[c[0]], c[2])]
    assert missing == []


# --- schemas, pins, env ----------------------------------------------------------------------------


def test_builtin_kinds_validate_strictly_against_kubernetes(objects):
    skipped = set()
    for o in objects:
        if "." in o["apiVersion"].split("/")[0] and not o["apiVersion"].startswith(
                ("apps/", "batch/", "rbac.authorization.k8s.io/", "networking.k8s.io/", "policy/",
                 "scheduling.k8s.io/", "apiextensions.k8s.io/")):
            skipped.add(o["kind"])
            continue
        kubernetes_validate.validate(o, K8S_VERSION, strict=True)
    assert skipped == {"RayJob"}  # custom resources: checked against their CRDs below


def test_custom_resources_validate_strictly_against_their_crds_in_the_render(objects):
    crds = {
        (c["spec"]["group"], c["spec"]["names"]["kind"]): c for c in objects if c["kind"] == "CustomResourceDefinition"
    }
    customs = [o for o in objects if (o["apiVersion"].split("/")[0], o["kind"]) in crds]
    assert customs
    for o in customs:
        group, version = o["apiVersion"].split("/")
        crd = crds[(group, o["kind"])]
        schema = next(v for v in crd["spec"]["versions"] if v["name"] == version)["schema"]["openAPIV3Schema"]
        jsonschema.validate(o, strict_schema(schema))


def test_every_image_is_pinned(objects):
    for o in objects:
        for spec in _pod_specs(o):
            for c in _containers(spec):
                image = c["image"]
                name, _, tag = image.rpartition(":") if "@" not in image else (image, "", "digest")
                assert "@sha256:" in image or (name and tag and tag != "latest" and "/" not in tag), \
                    f"{o['metadata']['name']}/{c['name']}: {image}"


def test_no_env_var_has_both_value_and_value_from(objects):
    for o in objects:
        for spec in _pod_specs(o):
            for c in _containers(spec):
                for e in c.get("env", []):
                    assert not ("value" in e and "valueFrom" in e), (o["metadata"]["name"], c["name"], e["name"])


def test_kuberay_operator_runs_in_its_namespace_with_its_rbac(objects):
    op = find(objects, "Deployment", "kuberay-operator")
    assert op["metadata"]["namespace"] == KUBERAY_NS
    binding = find(objects, "ClusterRoleBinding", "kuberay-operator")
    assert {"kind": "ServiceAccount", "name": "kuberay-operator", "namespace": KUBERAY_NS} in binding["subjects"]
    image = op["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.endswith(":" + platform().versions.kuberay)


def test_the_bootstraps_render_needs_only_pyyaml_and_pydantic_and_leaves_out_samples(objects, upstream_root, tmp_path):
    """The bootstrap renders in a venv with PyYAML and pydantic alone (no torch, Ray, MLflow, kfp),
    and applies everything but the samples."""
    blocker = ("import sys\nfor m in ('torch', 'ray', 'mlflow', 'kfp', 'pandas', 'kubernetes', 'numpy'):\n"
               "    sys.modules[m] = None\n"
               "from components.render.install import main\n"
               f"raise SystemExit(main(['--upstream', {str(upstream_root)!r}, '--no-samples', "
               f"'--out', {str(tmp_path / 'a.yaml')!r}]))\n")
    proc = subprocess.run([sys.executable, "-c", blocker], capture_output=True, text=True, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    applied = render.load_all((tmp_path / "a.yaml").read_text())
    key = lambda o: (o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"])  # noqa: E731
    assert sorted(map(key, applied)) == sorted(key(o) for o in objects if not install.is_sample(o))
    assert any(install.is_sample(o) for o in objects) and not any(install.is_sample(o) for o in applied)


def test_metadata_endpoint_is_outside_the_pod_network():
    """ipBlock peers match endpoints, never pods: the evaluator's own semantics."""
    policy = {"kind": "NetworkPolicy", "metadata": {"name": "egress", "namespace": NS},
              "spec": {"podSelector": {}, "policyTypes": ["Egress"],
                       "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32"]}}]}]}}
    net = Network([policy], extra_namespaces=[NS])
    src = Pod("p", NS, {})
    assert net.allows(src, Endpoint("web", "93.184.216.34"), 443)
    assert not net.allows(src, Endpoint("metadata", "169.254.169.254"), 80)
    assert not net.allows(src, Pod("q", NS, {}, {"http": 80}), "http")  # pods are not in ipBlocks


# --- the bootstrap can be resumed ------------------------------------------------------------------


def _bootstrap_shell(script: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHON": sys.executable, "VENV": str(tmp_path / "venv")}
    return subprocess.run(["bash", "-c", f"source {BOOTSTRAP}\n{script}"], capture_output=True, text=True, env=env)


def test_bootstrap_judges_a_half_made_venv_unusable(tmp_path):
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "venv")], check=True)
    half = _bootstrap_shell("venv_usable && echo usable || echo unusable", tmp_path)
    assert half.stdout.strip() == "unusable", half.stderr
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(tmp_path / "venv")], check=True)
    whole = _bootstrap_shell("venv_usable && echo usable || echo unusable", tmp_path)
    assert whole.stdout.strip() == "usable", whole.stderr


def test_bootstrap_reports_a_slow_component_and_goes_on(tmp_path):
    """A Deployment that is not ready is named at the end; the steps after it still run."""
    script = ("kc() { [[ \"$*\" == *deployment/slow* ]] && return 1; return 0; }\n"
              "wait_ready ns deployment/slow 1s; wait_ready ns deployment/fast 1s; echo after; report || echo rc=$?")
    out = _bootstrap_shell(script, tmp_path)
    assert "ready: ns/deployment/fast" in out.stdout and "after" in out.stdout and "rc=1" in out.stdout
    assert "not ready yet: ns/deployment/slow" in out.stderr and "bootstrap_command" in out.stderr


def test_bootstrap_order_gives_access_before_waiting_and_apt_waits_for_the_lock():
    text = BOOTSTRAP.read_text()
    body = text[text.index("main() {"):]
    steps = [line.strip() for line in body.splitlines()[1:] if line.strip() and not line.strip().startswith("#")]
    steps = steps[: steps.index("}")]
    assert steps.index("install_port_forwards") < steps.index("wait_for_platform") < steps.index("wait_for_kfp")
    assert steps.index("fetch_upstream") < steps.index("apply_install")
    assert "kubectl apply -k" not in text and "github.com" not in text  # no remote kustomize at boot
    for line in text.splitlines():
        if "apt-get" in line and "install" in line or "apt-get" in line and "update" in line:
            assert "DPkg::Lock::Timeout" in line, line


def test_credentials_are_kept_with_the_state_and_restored_on_a_new_cluster(tmp_path):
    """First cluster: made and kept (0600). A new cluster on the same volume: the kept ones come back."""
    kept = tmp_path / "state" / "credentials"
    created = tmp_path / "created.txt"
    fake_kc = (f"kc() {{ case \"$*\" in *' get secret '*) return 1;; *'create secret'*) "
               f"echo \"$* $(cat 2>/dev/null </dev/stdin | tr '\\n' ' ')\" >> {created};; esac; }}\n")
    first = _bootstrap_shell(fake_kc + f"SUDO=; CREDENTIALS_DIR={kept}; ensure_secret ns db PASSWORD=first", tmp_path)
    assert first.returncode == 0, first.stderr
    saved = kept / "ns.db.env"
    assert saved.read_text() == "PASSWORD=first\n" and oct(saved.stat().st_mode & 0o777) == "0o600"
    assert oct(kept.stat().st_mode & 0o777) == "0o700"
    again = _bootstrap_shell(fake_kc + f"SUDO=; CREDENTIALS_DIR={kept}; ensure_secret ns db PASSWORD=second", tmp_path)
    assert "restored secret ns/db" in again.stdout, again.stderr
    lines = created.read_text().splitlines()
    assert "--from-literal=PASSWORD=first" in lines[0]
    assert "--from-env-file=/dev/stdin" in lines[1] and "PASSWORD=first" in lines[1] and "second" not in lines[1]


def test_state_lives_on_named_volumes_under_the_state_folder_on_the_state_node(objects):
    from components.render import state

    p = platform()
    volumes = {o["metadata"]["name"]: o for o in objects if o["kind"] == "PersistentVolume"}
    claims = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in objects
              if o["kind"] == "PersistentVolumeClaim"}
    for (ns, claim), folder in state.stateful_claims().items():
        pvc = claims[(ns, claim)]
        pv = volumes[pvc["spec"]["volumeName"]]
        assert pvc["spec"]["storageClassName"] == "" == pv["spec"]["storageClassName"]  # no dynamic provisioning
        assert pv["spec"]["claimRef"] == {"namespace": ns, "name": claim}
        assert pv["spec"]["hostPath"]["path"] == f"{p.state.host_path}/{folder}"
        assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"  # a deleted claim keeps its data
        term = pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]
        assert term == {"key": p.state.node_label, "operator": "In", "values": ["true"]}
    for o in objects:
        ns = o["metadata"].get("namespace")
        for spec in _pod_specs(o):
            uses = [v["persistentVolumeClaim"]["claimName"] for v in spec.get("volumes", [])
                    if "persistentVolumeClaim" in v]
            if any((ns, c) in state.stateful_claims() for c in uses):
                assert spec["nodeSelector"][p.state.node_label] == "true", o["metadata"]["name"]
    unbound = [k for k, c in claims.items() if "volumeName" not in c["spec"] and k not in state.stateful_claims()]
    assert unbound == [(KFP_NS, "seaweedfs-pvc")]  # KFP's own store: our MinIO holds the artifacts


def test_state_folders_job_runs_first_and_gives_each_folder_to_its_pods_user(objects):
    from components.render import state

    job = find(objects, "Job", state.PREPARE_JOB)
    assert install.is_first(job)
    namespace = find(objects, "Namespace", job["metadata"]["namespace"])
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    script = job["spec"]["template"]["spec"]["containers"][0]["command"][-1]
    expected = {"postgres": "999:999", "kfp-mysql": "999:999", "minio": "1000:1000", "prometheus": "65534:65534",
                "registry": "1000:1000"}
    for folder, owner in expected.items():
        assert f"chown {owner} /state/{folder} " in script
    # No other root container anywhere in the install.
    roots = [(o["metadata"]["name"], c["name"]) for o in objects for spec in _pod_specs(o) for c in _containers(spec)
             if (c.get("securityContext") or {}).get("runAsUser") == 0]
    assert roots == [(state.PREPARE_JOB, "folders")]


def test_no_gpu_pieces_anywhere(objects):
    """The GPU node option is gone (terraform/README.md says why): nothing in the install asks for one."""
    import json as _json

    text = _json.dumps(objects)
    assert "nvidia.com/gpu" not in text and "RuntimeClass" not in {o["kind"] for o in objects}
