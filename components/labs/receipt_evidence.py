"""A receipt's evidence: its items (expected, found, pass / fail / skip), the files it hashed, and
the readers several labs' checks share (the MLflow registry, Prometheus, the cluster's RayJob)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from components.core.config import Config

PASS, FAIL, SKIP = "pass", "fail", "skip"


@dataclass
class Item:
    name: str
    expected: str
    found: str
    result: str  # pass | fail | skip
    reason: str = ""


@dataclass
class Options:
    """What a check may reach beyond the workspace (the cluster notebook passes these)."""

    tracking_uri: str | None = None
    kubeconfig: str | None = None
    namespace: str | None = None
    prometheus_url: str | None = None


@dataclass
class Context:
    """What one check reads; every file read through it is hashed into the receipt."""

    workspace: Path
    cfg: Config
    options: Options
    items: list[Item] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    run_ids: list[str] = field(default_factory=list)

    # --- evidence ---
    def hash(self, path: Path) -> bool:
        if not path.is_file():
            return False
        self.files[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
        return True

    def read_json(self, path: Path) -> Any:
        if not self.hash(path):
            return None
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            return None

    # --- items ---
    def expect(self, name: str, expected: str, found: Any, ok: bool, reason: str = "") -> bool:
        self.items.append(Item(name, expected, str(found), PASS if ok else FAIL, "" if ok else reason))
        return ok

    def skip(self, name: str, expected: str, reason: str) -> None:
        self.items.append(Item(name, expected, "-", SKIP, reason))

    def file(self, name: str, path: Path, what: str = "") -> bool:
        """A file the lab must have written (hashed)."""
        rel = relative(path, self.workspace)
        return self.expect(name, f"{rel} exists{what}", "present" if path.is_file() else "missing",
                           self.hash(path), f"{rel} not found: the cell that writes it has not run")


def relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


# --- MLflow -------------------------------------------------------------------------------------


def mlflow_client(ctx: Context) -> Any | None:
    """An MlflowClient on the lab's store, or None (with a failed item) when the lab never made one.

    The local store is checked for existence first: opening a missing SQLite file would create it.
    """
    from mlflow import MlflowClient

    from components.learn import tracking

    uri = ctx.options.tracking_uri or tracking.tracking_uri(ctx.cfg)
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        if not ctx.expect(
            "MLflow store",
            f"{relative(db, ctx.workspace)} exists",
            "present" if db.is_file() else "missing",
            db.is_file(),
            "no MLflow store in the workspace: nothing was trained here",
        ):
            return None
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def model_versions(client: Any, name: str) -> list[Any]:
    return sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version))


def model_aliases(client: Any, name: str) -> dict[str, str]:
    from mlflow.exceptions import MlflowException

    try:
        return {a: str(v) for a, v in client.get_registered_model(name).aliases.items()}
    except MlflowException:
        return {}


def read_registry(ctx: Context, min_versions: int = 1, champion: bool = True) -> tuple[Any, list[Any], dict[str, str]]:
    """Registered versions with lineage tags and (optionally) a champion alias; returns what it read."""
    from components.learn import tracking

    client = mlflow_client(ctx)
    if client is None:
        return None, [], {}
    name = tracking.model_name(ctx.cfg)
    versions = model_versions(client, name)
    ctx.expect(
        "registered versions",
        f"at least {min_versions} of {name}",
        len(versions),
        len(versions) >= min_versions,
        "the train step has not registered enough models",
    )
    for v in versions:
        if v.run_id and v.run_id not in ctx.run_ids:
            ctx.run_ids.append(v.run_id)
    lineage = [v.version for v in versions if not v.tags.get("data_version")]
    if versions:
        ctx.expect("lineage", "every version tagged with its data_version", f"untagged: {lineage or 'none'}",
                   not lineage, "versions registered without the train step's lineage tags")
    aliases = model_aliases(client, name) if versions else {}
    if champion:
        ctx.expect("champion alias", f"{tracking.CHAMPION} on a registered version",
                   aliases.get(tracking.CHAMPION, "none"), tracking.CHAMPION in aliases,
                   "no version was promoted to champion")
    return client, versions, aliases


# --- Prometheus and the cluster ---------------------------------------------------------------------


def check_prometheus(ctx: Context, url: str | None, why_none: str) -> None:
    """Scrape targets up and no alert firing, read from Prometheus' HTTP API; skipped when none is up."""
    from components.serving import metric_names

    if not url:
        ctx.skip("Prometheus targets", f"job {metric_names.SCRAPE_JOB} up", why_none)
        ctx.skip("Prometheus alerts", "none firing", why_none)
        return
    try:
        targets = httpx.get(f"{url}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        alerts = httpx.get(f"{url}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
    except (httpx.HTTPError, KeyError, ValueError) as exc:
        ctx.expect("Prometheus", f"answers at {url}", f"error: {exc}", False, "Prometheus did not answer")
        return
    ours = [t for t in targets if t.get("labels", {}).get("job") == metric_names.SCRAPE_JOB]
    up = [t for t in ours if t.get("health") == "up"]
    ctx.expect("Prometheus targets", f"job {metric_names.SCRAPE_JOB} up", f"{len(up)} of {len(ours)} up",
               bool(ours) and len(up) == len(ours), "the model server is not scraped, or a target is down")
    firing = sorted({a["labels"].get("alertname", "?") for a in alerts if a.get("state") == "firing"})
    ctx.expect("Prometheus alerts", "none firing", ", ".join(firing) or "none firing", not firing,
               "an alert fires: read its annotation in Prometheus")


def check_rayjob(ctx: Context) -> None:
    """The newest RayJob in the namespace finished SUCCEEDED (kubernetes client, the given kubeconfig)."""
    if not ctx.options.kubeconfig:
        ctx.skip("RayJob", "the newest RayJob SUCCEEDED", "no --kubeconfig given (the cluster notebook passes it)")
        return
    import urllib3
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException

    from components.core.platform import platform

    namespace = ctx.options.namespace or platform().namespace
    try:
        api = client.CustomObjectsApi(config.new_client_from_config(config_file=ctx.options.kubeconfig))
        jobs = api.list_namespaced_custom_object("ray.io", "v1", namespace, "rayjobs")["items"]
    except (ApiException, ConfigException, urllib3.exceptions.HTTPError, OSError) as exc:  # all say: not reachable
        ctx.expect("RayJob", f"readable in namespace {namespace}", f"error: {exc}"[:200], False,
                   "the cluster did not answer through this kubeconfig (is the tunnel up?)")
        return
    if not jobs:
        ctx.expect("RayJob", "the newest RayJob SUCCEEDED", "no RayJob", False, "no training ran on this cluster")
        return
    newest = max(jobs, key=lambda j: j["metadata"].get("creationTimestamp", ""))
    status = newest.get("status", {}).get("jobStatus", "unknown")
    name = newest["metadata"]["name"]
    ctx.run_ids.append(f"rayjob/{name}")
    ctx.expect("RayJob", "the newest RayJob SUCCEEDED", f"{name}: {status}", status == "SUCCEEDED",
               "the training RayJob did not succeed: kubectl describe rayjob shows why")
