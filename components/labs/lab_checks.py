"""Each lab's check: what its notebook must have produced, read back from the workspace (or the cluster)."""

from __future__ import annotations

from pathlib import Path

from components.labs.receipt_evidence import (
    Context,
    check_prometheus,
    check_rayjob,
    mlflow_client,
    model_aliases,
    read_registry,
)


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
    ctx.expect(
        "rows accounted",
        "in = accepted + quarantined",
        rows,
        rows.get("in") is not None and rows.get("in") == (rows.get("accepted") or 0) + (rows.get("quarantined") or 0),
        "rows went missing between ingest and validation",
    )
    report = summary.get("artifacts", {}).get("evaluation_report")
    if report:
        ctx.file("evaluation report", Path(report))
    model = summary.get("model", {})
    _, versions, _ = read_registry(ctx, champion=bool(summary.get("verdict", {}).get("blessed")))
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
    from components.learn.features import SPLIT_FILE

    split = ctx.read_json(ctx.workspace / "features" / SPLIT_FILE)
    ctx.expect(
        "features",
        "features/split.json with train, val and test weeks",
        sorted((split or {}).get("weeks", {})),
        split is not None and {"train", "val", "test"} <= set(split["weeks"]),
        "the features were not built: run the 'Features' cell",
    )
    for model_dir in ("model-in-process", "model-ray"):
        ctx.file(f"model bundle ({model_dir})", ctx.workspace / model_dir / "model.pt")
    client, _, _ = read_registry(ctx, min_versions=2, champion=False)
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
    read_registry(ctx, min_versions=2)


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

    _, _, aliases = read_registry(ctx)
    log = ctx.workspace / "model-server.log"
    text = log.read_text(errors="replace") if ctx.hash(log) else ""
    champion = aliases.get(tracking.CHAMPION)
    loaded = f"loaded {tracking.model_name(ctx.cfg)} version {champion} "
    ctx.expect("server followed the alias", f"model-server.log: {loaded.strip()}",
               "found" if champion and loaded in text else ("no server log" if not text else "not in the log"),
               bool(champion) and loaded in text,
               "the model server did not load the champion: start it, then run the 'Promote' cell")
    ctx.expect(
        "graceful stop",
        "the server stopped on SIGTERM",
        "shutdown logged" if "Shutting down" in text else "not logged",
        "Shutting down" in text,
        "the 'Stop the server' cell has not run",
    )
    _prediction_log(ctx)
    stack_cfg = ctx.cfg.model_copy(update={"workspace": str(ctx.workspace / "stack")})
    report = stack.status(stack_cfg)
    prometheus = report.get("services", {}).get("prometheus", {})
    url = prometheus.get("url") if prometheus.get("healthy") else None
    check_prometheus(ctx, url, "no local stack up in this workspace (the notebook stops it at the end)")


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
    client, versions, aliases = read_registry(ctx, min_versions=2)
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
    frozen = ctx.read_json(ctx.workspace / "frozen" / "simulate" / "history.json") or []
    fired = sorted({t.split(" (")[0] for r in frozen for t in r.get("triggers", [])})
    ctx.expect("frozen champion", "its online figures trigger on a slice's bias and on new areas", fired or "not run",
               {"slice bias growth", "unseen areas"} <= set(fired),
               "run the frozen-champion section with FROZEN_WEEKS = 32")


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
    known = {s.name: s.expected for s in chaos.scenarios()}
    for outcome in outcomes:
        failed = [c for c in outcome.checks if not c.passed]
        ctx.expect(f"scenario {outcome.scenario}", known.get(outcome.scenario, "a known scenario"),
                   f"{len(outcome.checks) - len(failed)} of {len(outcome.checks)} checks held",
                   outcome.scenario in known and outcome.passed,
                   "; ".join(f"{c.what}: {c.evidence}"[:200] for c in failed) or "no checks recorded")


def check_chameleon(ctx: Context) -> None:
    check_rayjob(ctx)
    if ctx.options.tracking_uri:
        read_registry(ctx)
        from components.cluster.deploy import PRODUCTION
        from components.learn import tracking

        client = mlflow_client(ctx)
        aliases = model_aliases(client, tracking.model_name(ctx.cfg)) if client else {}
        ctx.expect("production alias", f"{PRODUCTION} on a version (the canary was promoted)",
                   aliases.get(PRODUCTION, "none"), PRODUCTION in aliases,
                   "the deploy step has not promoted a canary to production")
    else:
        ctx.skip("MLflow registry", "champion and production aliases", "no --tracking-uri given (the tunnel's MLflow)")
    check_prometheus(ctx, ctx.options.prometheus_url, "no --prometheus-url given (the tunnel's Prometheus)")


