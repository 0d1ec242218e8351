"""Receipts instead of screenshots: what a lab produced, read back and checked.

``check_lab(key, workspace)`` reads the files, the MLflow registry and (where one is up or
given) Prometheus and the cluster a notebook's lab leaves behind, and returns a receipt: one
item per expectation (expected, found, pass / fail / skip with its reason), the run ids it
saw and the sha256 of every file it read, so a receipt cannot be written without the lab's
own outputs. ``collect`` turns a folder of receipts into one table per student.

A receipt passes when no item failed and at least one passed: a skipped item (no stack up,
no kubeconfig given) says why and counts neither way.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from components.core.config import DEFAULT_CONFIG, Config, load_config

STUDENT_ENV = "SERVICETIME_STUDENT"
RECEIPTS_ENV = "SERVICETIME_RECEIPTS"
PASS, FAIL, SKIP = "pass", "fail", "skip"


def default_out_dir() -> Path:
    """Where receipts go: $SERVICETIME_RECEIPTS, else a folder in the home directory (kept on Chameleon's Jupyter)."""
    return Path(os.environ.get(RECEIPTS_ENV) or Path.home() / "servicetime-receipts")


def student_id(given: str | None = None) -> str:
    return given or os.environ.get(STUDENT_ENV) or getpass.getuser()


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
        rel = _rel(path, self.workspace)
        return self.expect(name, f"{rel} exists{what}", "present" if path.is_file() else "missing",
                           self.hash(path), f"{rel} not found: the cell that writes it has not run")


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


# --- MLflow -------------------------------------------------------------------------------------


def _mlflow(ctx: Context) -> Any | None:
    """An MlflowClient on the lab's store, or None (with a failed item) when the lab never made one.

    The local store is checked for existence first: opening a missing SQLite file would create it.
    """
    from mlflow import MlflowClient

    from components.learn import tracking

    uri = ctx.options.tracking_uri or tracking.tracking_uri(ctx.cfg)
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        if not ctx.expect("MLflow store", f"{_rel(db, ctx.workspace)} exists", "present" if db.is_file() else "missing",
                          db.is_file(), "no MLflow store in the workspace: nothing was trained here"):
            return None
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _versions(client: Any, name: str) -> list[Any]:
    return sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version))


def _aliases(client: Any, name: str) -> dict[str, str]:
    from mlflow.exceptions import MlflowException

    try:
        return {a: str(v) for a, v in client.get_registered_model(name).aliases.items()}
    except MlflowException:
        return {}


def _registry(ctx: Context, min_versions: int = 1, champion: bool = True) -> tuple[Any, list[Any], dict[str, str]]:
    """Registered versions with lineage tags and (optionally) a champion alias; returns what it read."""
    from components.learn import tracking

    client = _mlflow(ctx)
    if client is None:
        return None, [], {}
    name = tracking.model_name(ctx.cfg)
    versions = _versions(client, name)
    ctx.expect("registered versions", f"at least {min_versions} of {name}", len(versions), len(versions) >= min_versions,
               "the train step has not registered enough models")
    for v in versions:
        if v.run_id and v.run_id not in ctx.run_ids:
            ctx.run_ids.append(v.run_id)
    lineage = [v.version for v in versions if not v.tags.get("data_version")]
    if versions:
        ctx.expect("lineage", "every version tagged with its data_version", f"untagged: {lineage or 'none'}",
                   not lineage, "versions registered without the train step's lineage tags")
    aliases = _aliases(client, name) if versions else {}
    if champion:
        ctx.expect("champion alias", f"{tracking.CHAMPION} on a registered version",
                   aliases.get(tracking.CHAMPION, "none"), tracking.CHAMPION in aliases,
                   "no version was promoted to champion")
    return client, versions, aliases


# --- Prometheus and the cluster ---------------------------------------------------------------------


def _prometheus(ctx: Context, url: str | None, why_none: str) -> None:
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


def _rayjob(ctx: Context) -> None:
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


# --- one check per notebook ---------------------------------------------------------------------------


def check_quickstart(ctx: Context) -> None:
    summary = ctx.read_json(ctx.workspace / "summary.json")
    if not ctx.expect("run summary", "summary.json written by `servicetime run`",
                      "present" if summary else "missing", summary is not None,
                      "summary.json not found: run the 'Run the pipeline' cell"):
        return
    ctx.run_ids.append(summary.get("run_uri", "?"))
    ctx.expect("run status", "SUCCEEDED", summary.get("status"), summary.get("status") == "SUCCEEDED",
               f"the run failed: {summary.get('error')}")
    steps = summary.get("steps_completed", [])
    ctx.expect("steps", "ingest .. evaluate completed", ", ".join(steps),
               {"ingest", "validate", "features", "train", "evaluate"} <= set(steps), "the run stopped early")
    rows = summary.get("rows", {})
    ctx.expect("rows accounted", "in = accepted + quarantined", rows,
               rows.get("in") is not None and rows.get("in") == (rows.get("accepted") or 0) + (rows.get("quarantined") or 0),
               "rows went missing between ingest and validation")
    report = summary.get("artifacts", {}).get("evaluation_report")
    if report:
        ctx.file("evaluation report", Path(report))
    model = summary.get("model", {})
    _, versions, _ = _registry(ctx, champion=bool(summary.get("verdict", {}).get("blessed")))
    if versions and model.get("version"):
        by_version = {str(v.version): v for v in versions}
        registered = by_version.get(str(model["version"]))
        ctx.expect("summary's model in the registry", f"version {model['version']} from run {model.get('run_id')}",
                   registered.run_id if registered else "not registered",
                   registered is not None and registered.run_id == model.get("run_id"),
                   "the summary names a model the registry does not hold")
        if registered is not None:
            ctx.expect("model's data version", summary.get("clean_version"), registered.tags.get("data_version"),
                       registered.tags.get("data_version") == summary.get("clean_version"),
                       "the model was trained on another dataset version than this run's")


def check_data(ctx: Context) -> None:
    from components.data.datasets import DatasetStore

    root = ctx.workspace / "data"
    store = DatasetStore(str(root))
    raw = store.raw_batches() if (root / "raw").is_dir() else []
    ctx.expect("weekly batches", f"{ctx.cfg.data.weeks} under data/raw", len(raw), len(raw) >= ctx.cfg.data.weeks,
               "the data was not generated: run the 'Versioned datasets' cells")
    for name in raw:
        ctx.hash(Path(store.raw_uri(name)))
    checked = ctx.read_json(ctx.workspace / "validate" / "validation.json")
    if not ctx.expect("validation report", "validate/validation.json", "present" if checked else "missing",
                      checked is not None, "the dataset was not validated: run the 'Quarantine accounting' cell"):
        return
    ctx.hash(ctx.workspace / "validate" / "report.md")
    ctx.run_ids.append(f"data/{checked.get('data_version')}")
    ctx.expect("rows accounted", "in = accepted + quarantined",
               f"{checked['rows_in']} = {checked['rows_accepted']} + {checked['rows_quarantined']}",
               checked["rows_in"] == checked["rows_accepted"] + checked["rows_quarantined"], "rows were lost")
    quarantine = Path(checked.get("quarantine_uri") or "")
    kept = sorted(quarantine.glob("*.parquet")) if quarantine.is_dir() else []
    if checked["rows_quarantined"]:
        import pandas as pd

        rows = sum(len(pd.read_parquet(p)) for p in kept if ctx.hash(p))
        ctx.expect("quarantine", f"{checked['rows_quarantined']} rows kept, each with a reason", rows,
                   rows == checked["rows_quarantined"], "quarantined rows are missing from the quarantine folder")
    clean = checked.get("clean_version")
    manifest = ctx.read_json(root / "datasets" / str(clean) / "manifest.json") if clean else None
    ctx.expect("clean version", "a clean dataset version whose parent is the raw one",
               f"{clean} (parent {(manifest or {}).get('parent')})",
               manifest is not None and manifest.get("parent") == checked.get("data_version"),
               "no clean version was written")


def check_training(ctx: Context) -> None:
    split = ctx.read_json(ctx.workspace / "features" / "split.json")
    ctx.expect("features", "features/split.json with train, val and test weeks",
               sorted((split or {}).get("weeks", {})), split is not None and {"train", "val", "test"} <= set(split["weeks"]),
               "the features were not built: run the 'Features' cell")
    for model_dir in ("model-in-process", "model-ray"):
        ctx.file(f"model bundle ({model_dir})", ctx.workspace / model_dir / "model.pt")
    client, _, _ = _registry(ctx, min_versions=2, champion=False)
    if client is None:
        return
    workers = {}
    for run_id in ctx.run_ids:
        run = client.get_run(run_id)
        workers[run_id] = run.data.params.get("train.num_workers")
    ctx.expect("training runs", "one in-process and one on Ray (num_workers > 0)", sorted(set(workers.values())),
               "0" in workers.values() and any(w not in (None, "0") for w in workers.values()),
               "only one kind of training ran (RAY_WORKERS = 0 skips Ray)")
    checkpoints = sorted((ctx.workspace / "checkpoints").rglob("state.pt"))
    ctx.expect("checkpoints", "Ray Train's state.pt per epoch", len(checkpoints), bool(checkpoints),
               "no checkpoint: the Ray training cell has not run")
    for path in checkpoints[-1:]:
        ctx.hash(path)


def check_evaluation(ctx: Context) -> None:
    evaluation_dir = ctx.workspace / "evaluation"
    verdict = ctx.read_json(evaluation_dir / "verdict.json")
    if not ctx.expect("verdict", "evaluation/verdict.json", "present" if verdict else "missing", verdict is not None,
                      "the evaluate step has not run"):
        return
    ctx.read_json(evaluation_dir / "evaluation.json")
    ctx.file("report", evaluation_dir / "report.md")
    ctx.file("route replay plot", evaluation_dir / "route_delay.png")
    ctx.expect("gate", "the candidate BLESSED", verdict.get("blessed"), verdict.get("blessed") is True,
               "; ".join(verdict.get("reasons", []))[:200])
    weak = ctx.read_json(ctx.workspace / "evaluation-weak" / "verdict.json")
    ctx.expect("weak candidate", "NOT BLESSED (the gate holds)", None if weak is None else weak.get("blessed"),
               weak is not None and weak.get("blessed") is False, "the weak candidate was not evaluated")
    _registry(ctx, min_versions=2)


def _prediction_log(ctx: Context) -> None:
    """The served predictions, where the model server wrote its log (day-partitioned Parquet)."""
    root = ctx.workspace / "predictions"
    parts = sorted(root.glob("day=*/*.parquet")) if root.is_dir() else []
    if not parts:
        ctx.skip("prediction log", "predictions/day=*/ Parquet parts",
                 "no prediction log in this workspace (the server writes one when monitor.log_predictions is on)")
        return
    import pyarrow.parquet as pq

    rows = sum(pq.read_metadata(p).num_rows for p in parts if ctx.hash(p))
    ctx.expect("prediction log", "served predictions logged", f"{rows} rows in {len(parts)} files", rows > 0,
               "the prediction log is empty")


def check_serving(ctx: Context) -> None:
    from components.devstack import stack
    from components.learn import tracking

    _, _, aliases = _registry(ctx)
    log = ctx.workspace / "model-server.log"
    text = log.read_text(errors="replace") if ctx.hash(log) else ""
    champion = aliases.get(tracking.CHAMPION)
    loaded = f"loaded {tracking.model_name(ctx.cfg)} version {champion} "
    ctx.expect("server followed the alias", f"model-server.log: {loaded.strip()}",
               "found" if champion and loaded in text else ("no server log" if not text else "not in the log"),
               bool(champion) and loaded in text,
               "the model server did not load the champion: start it, then run the 'Promote' cell")
    ctx.expect("graceful stop", "the server stopped on SIGTERM", "shutdown logged" if "Shutting down" in text else "not logged",
               "Shutting down" in text, "the 'Stop the server' cell has not run")
    _prediction_log(ctx)
    stack_cfg = ctx.cfg.model_copy(update={"workspace": str(ctx.workspace / "stack")})
    report = stack.status(stack_cfg)
    prometheus = report.get("services", {}).get("prometheus", {})
    url = prometheus.get("url") if prometheus.get("healthy") else None
    _prometheus(ctx, url, "no local stack up in this workspace (the notebook stops it at the end)")


def check_data_that_changes(ctx: Context) -> None:
    history = ctx.read_json(ctx.workspace / "simulate" / "history.json")
    if not ctx.expect("loop history", "simulate/history.json", "present" if history else "missing",
                      history is not None, "the loop has not run: run the 'The loop' cell"):
        return
    ctx.hash(ctx.workspace / "simulate" / "history.png")
    rejected = [r for r in history if not r.get("accepted")]
    retrained = [r for r in history if r.get("candidate_version")]
    ctx.expect("weeks", "every new week processed", len(history), len(history) > 0, "no week was processed")
    ctx.expect("rejected week", "the corrupted week rejected", [r.get("week") for r in rejected], bool(rejected),
               "no week was rejected (CORRUPT_AFTER = None?)")
    quarantine = ctx.workspace / "data" / "quarantine" / "live"
    kept = sorted(quarantine.glob("*.parquet")) if quarantine.is_dir() else []
    for path in kept:
        ctx.hash(path)
    ctx.expect("rows kept", "the rejected week's rows in quarantine/live", f"{len(kept)} files",
               bool(kept) or not rejected, "the rejected rows are not in the live quarantine")
    ctx.expect("retraining", "at least one candidate trained in the loop", len(retrained), bool(retrained),
               "the loop never retrained")
    client, versions, aliases = _registry(ctx, min_versions=2)
    if client is None or not versions:
        return
    from components.learn import tracking

    promotions = client.get_registered_model(tracking.model_name(ctx.cfg)).tags.get(tracking.HISTORY_TAG, "")
    champion = aliases.get(tracking.CHAMPION)
    latest = str(retrained[-1]["candidate_version"]) if retrained else None
    ctx.expect("rollback", "champion moved back from the newest candidate", f"champion {champion}, latest {latest}",
               champion is not None and latest is not None and champion != latest,
               "the rollback cell has not run")
    ctx.expect("promotion history", "the registry's champion_history tag", promotions or "empty", bool(promotions),
               "no promotion recorded")


def check_how_ml_breaks(ctx: Context) -> None:
    from components.labs import chaos

    path = ctx.workspace / chaos.OUTCOMES_FILE
    try:
        outcomes = chaos.load_outcomes(path) if ctx.hash(path) else []
    except (ValueError, KeyError, TypeError):  # not JSON, or not the outcomes' shape
        outcomes = []
    if not ctx.expect("scenarios run", f"at least one scenario's outcome in {chaos.OUTCOMES_FILE}", len(outcomes),
                      bool(outcomes), "no scenario has run: run the scenario cells, then the summary cell"):
        return
    known = {s.name: s.expected for s in chaos.SCENARIOS}
    for outcome in outcomes:
        failed = [c for c in outcome.checks if not c.passed]
        ctx.expect(f"scenario {outcome.scenario}", known.get(outcome.scenario, "a known scenario"),
                   f"{len(outcome.checks) - len(failed)} of {len(outcome.checks)} checks held",
                   outcome.scenario in known and outcome.passed,
                   "; ".join(f"{c.what}: {c.evidence}"[:200] for c in failed) or "no checks recorded")


def check_chameleon(ctx: Context) -> None:
    _rayjob(ctx)
    if ctx.options.tracking_uri:
        _registry(ctx)
        from components.learn import tracking

        client = _mlflow(ctx)
        aliases = _aliases(client, tracking.model_name(ctx.cfg)) if client else {}
        ctx.expect("production alias", "production on a version (the canary was promoted)",
                   aliases.get("production", "none"), "production" in aliases,
                   "the deploy step has not promoted a canary to production")
    else:
        ctx.skip("MLflow registry", "champion and production aliases", "no --tracking-uri given (the tunnel's MLflow)")
    _prometheus(ctx, ctx.options.prometheus_url, "no --prometheus-url given (the tunnel's Prometheus)")


@dataclass(frozen=True)
class Lab:
    key: str
    notebook: str
    check: Callable[[Context], None]
    local: bool = True  # reads a workspace (07 reads the cluster and the tunnel's services instead)


LABS: dict[str, Lab] = {lab.key: lab for lab in (
    Lab("01", "01_quickstart.ipynb", check_quickstart),
    Lab("02", "02_data.ipynb", check_data),
    Lab("03", "03_training.ipynb", check_training),
    Lab("04", "04_evaluation.ipynb", check_evaluation),
    Lab("05", "05_serving.ipynb", check_serving),
    Lab("06", "06_data_that_changes.ipynb", check_data_that_changes),
    Lab("07", "07_chameleon.ipynb", check_chameleon, local=False),
    Lab("08", "08_how_ml_breaks.ipynb", check_how_ml_breaks),
)}


def lab_key(name: str) -> str:
    """'01', '1', 'quickstart' or '01_quickstart.ipynb' -> '01'."""
    for lab in LABS.values():
        stem = lab.notebook.removesuffix(".ipynb")
        if name in (lab.key, lab.key.lstrip("0"), stem, stem[3:], lab.notebook):
            return lab.key
    raise KeyError(f"no lab {name!r}; one of {', '.join(LABS)}")


# --- the receipt -----------------------------------------------------------------------------------------


def check_lab(lab: str, workspace: str | Path, config: str | Path | None = None, student: str | None = None,
              options: Options | None = None, cfg: Config | None = None) -> dict:
    """Run one lab's check on its workspace and return the receipt (a JSON-ready dict)."""
    key = lab_key(str(lab))
    ws = Path(workspace).resolve()
    cfg = cfg or load_config(Path(config) if config else DEFAULT_CONFIG, {"workspace": str(ws)})
    ctx = Context(ws, cfg, options or Options())
    if LABS[key].local and not ws.is_dir():
        ctx.expect("workspace", f"{ws} exists", "missing", False, "the lab's workspace does not exist")
    else:
        LABS[key].check(ctx)
    results = [i.result for i in ctx.items]
    passed = FAIL not in results and PASS in results
    return {
        "lab": key, "notebook": LABS[key].notebook, "student": student_id(student), "passed": passed,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "workspace": str(ws),
        "counts": {r: results.count(r) for r in (PASS, FAIL, SKIP)},
        "items": [asdict(i) for i in ctx.items], "run_ids": ctx.run_ids, "files_sha256": ctx.files,
    }


def render_markdown(receipt: dict) -> str:
    lines = [f"### Lab {receipt['lab']} ({receipt['notebook']}): {'PASS' if receipt['passed'] else 'FAIL'}",
             f"student `{receipt['student']}`, {receipt['created_at']}, {len(receipt['files_sha256'])} files hashed", "",
             "| check | expected | found | result |", "|---|---|---|---|"]
    for i in receipt["items"]:
        found = i["found"] if i["result"] == PASS else f"{i['found']} ({i['reason']})"
        lines.append(f"| {i['name']} | {_cell(i['expected'])} | {_cell(found)} | {i['result']} |")
    if receipt["run_ids"]:
        lines += ["", "runs: " + ", ".join(f"`{r}`" for r in receipt["run_ids"])]
    digest = hashlib.sha256(json.dumps(receipt["files_sha256"], sort_keys=True).encode()).hexdigest()
    lines.append(f"evidence sha256: `{digest[:16]}` (over the files' hashes in the JSON)")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")[:160]


def write_receipt(receipt: dict, out_dir: str | Path | None = None) -> Path:
    """Write <out>/<student>/lab-<key>.json and .md; returns the JSON path."""
    folder = Path(out_dir or default_out_dir()) / receipt["student"]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"lab-{receipt['lab']}.json"
    path.write_text(json.dumps(receipt, indent=2) + "\n")
    path.with_suffix(".md").write_text(render_markdown(receipt))
    return path


# --- the instructor's table -------------------------------------------------------------------------------


def collect(folder: str | Path) -> dict[str, dict[str, dict]]:
    """Every receipt under ``folder`` (any depth): student -> lab -> the newest receipt for it."""
    table: dict[str, dict[str, dict]] = {}
    for path in sorted(Path(folder).rglob("*.json")):
        try:
            receipt = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if not isinstance(receipt, dict) or not {"lab", "student", "passed", "items"} <= set(receipt):
            continue  # not a receipt
        labs = table.setdefault(receipt["student"], {})
        if receipt["lab"] not in labs or receipt["created_at"] > labs[receipt["lab"]]["created_at"]:
            labs[receipt["lab"]] = receipt
    return table


def render_collected(table: dict[str, dict[str, dict]]) -> str:
    """One table per student: each lab's result, its first failing reason, when."""
    out = []
    for student in sorted(table):
        labs = table[student]
        done = sum(1 for r in labs.values() if r["passed"])
        out += [f"## {student}: {done} of {len(LABS)} labs pass", "", "| lab | result | pass/fail/skip | first failure | when |",
                "|---|---|---|---|---|"]
        for key, lab in LABS.items():
            r = labs.get(key)
            if r is None:
                out.append(f"| {key} {lab.notebook} | no receipt | - | - | - |")
                continue
            c = r["counts"]
            first = next((f"{i['name']}: {i['reason']}" for i in r["items"] if i["result"] == FAIL), "")
            out.append(f"| {key} {lab.notebook} | {'PASS' if r['passed'] else 'FAIL'} | "
                       f"{c[PASS]}/{c[FAIL]}/{c[SKIP]} | {_cell(first)} | {r['created_at']} |")
        out.append("")
    return "\n".join(out) or "no receipts found\n"


def notebook_receipt(lab: str, workspace: str | Path, cfg: Config | None = None, **options: Any) -> dict:
    """The receipt cell of each notebook: check, write, show the table (IPython) and return the receipt."""
    receipt = check_lab(lab, workspace, options=Options(**options), cfg=cfg)
    path = write_receipt(receipt)
    try:
        from IPython.display import Markdown, display

        display(Markdown(render_markdown(receipt)))
    except ImportError:
        print(render_markdown(receipt))
    print(f"receipt: {path}")
    return receipt
