"""The ``servicetime`` command line. It only parses arguments and calls the library."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import time
import uuid
from pathlib import Path

from components.cli.options import add_global_options
from components.cli.options import config_from_args as _config
from components.cli.options import data_root as _data_root
from components.core.logs import configure

log = logging.getLogger("servicetime")

# Command groups in their own modules of this package: each has add_parser(subparsers).
COMMAND_GROUPS: tuple[str, ...] = (
    "components.cli.monitor",
    "components.cli.check",
    "components.cli.chaos",
)


# --- data ---------------------------------------------------------------------------------

def cmd_data_generate(args: argparse.Namespace) -> int:
    from components.steps.ingest import generate_raw

    extra = {k: v for k, v in {"data.weeks": args.weeks, "data.seed": args.seed}.items() if v is not None}
    cfg = _config(args, extra)
    out = args.out or _data_root(cfg, args)
    started = time.perf_counter()
    names = generate_raw(cfg.data, out)
    log.info("generated %d weekly batches (seed %d) under %s/raw in %.1f s", len(names), cfg.data.seed, out,
             time.perf_counter() - started)
    return 0


def cmd_data_validate(args: argparse.Namespace) -> int:
    from components.core.storage import Storage, to_parquet_bytes
    from components.data.drift import Reference, build_reference
    from components.data.validation import render_markdown, validate_batch

    cfg = _config(args)
    storage = Storage()
    try:
        frame = storage.read_parquet(args.batch)
    except Exception as exc:
        print(json.dumps({"accepted": False, "errors": [f"cannot read batch: {exc}"]}))
        return 2
    reference = None
    if args.reference:
        if args.reference.endswith(".json"):
            reference = Reference.from_dict(storage.read_json(args.reference))
        else:
            reference = build_reference(storage.read_parquet(args.reference))
    name = Path(args.batch).name.removesuffix(".parquet")
    result = validate_batch(frame, cfg.validation, reference, batch=name)
    report = result.report()
    quarantine = args.quarantine or str(Path(args.report or args.batch).with_suffix("")) + ".quarantine.parquet"
    if len(result.quarantined_rows):
        storage.write_bytes(quarantine, to_parquet_bytes(result.quarantined_rows))
        report["quarantine_uri"] = quarantine
    text = json.dumps(report, indent=2)
    if args.report:
        storage.write_text(args.report, text + "\n")
        storage.write_text(str(Path(args.report).with_suffix(".md")), render_markdown([report]))
    print(text)
    return 0 if result.accepted else 1


def cmd_data_orders(args: argparse.Namespace) -> int:
    from components.core.storage import Storage
    from components.data.datasets import DatasetStore
    from components.learn.planning import simulated_orders

    cfg = _config(args)
    week = args.week
    if week is None:  # the week after the data (or after the simulated year when there is none yet)
        week = len(DatasetStore(_data_root(cfg, args)).raw_batches()) or cfg.data.weeks
    orders = simulated_orders(cfg.data, week, keep_labels=args.with_labels)
    Storage().write_parquet(args.out, orders)
    print(f"week {week}: {len(orders):,} planned stops on {orders['route_id'].nunique():,} routes -> {args.out}"
          + (" (with labels, to measure coverage)" if args.with_labels else ""))
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from components.learn.planning import plan_file

    cfg = _config(args)
    s = plan_file(cfg, args.orders, args.out, model_uri=args.model_uri, calibration_uri=args.calibration)
    print(f"planned {s['stops']:,} stops on {s['routes']:,} routes with model v{s['model_version']} -> {s['out']}")
    line = f"  arrival windows at {s['level']:.0%} (calibration: {s['window_calibration']})"
    if s["window_coverage"]:
        c = s["window_coverage"]
        line += (f"; on these stops' real arrivals (after each route's start): coverage {c['coverage']:.1%}, early {c['early_share']:.1%}, "
                 f"late {c['late_share']:.1%}, mean width {c['mean_width_s'] / 60:.0f} min")
    print(line)
    if args.summary:
        from components.core.storage import Storage

        Storage().write_json(args.summary, s)
    return 0


# --- pipeline ---------------------------------------------------------------------------------

def cmd_run(args: argparse.Namespace) -> int:
    from components.core.storage import Storage, join
    from components.data.datasets import DatasetStore
    from components.steps.ingest import generate_raw
    from components.steps.summary import render_text
    from pipelines.local import run_local

    extra = {k: v for k, v in {"train.num_workers": args.workers, "train.epochs": args.epochs,
                               "data.weeks": args.weeks}.items() if v is not None}
    cfg = _config(args, extra)
    data_root = _data_root(cfg, args)
    if args.stack:
        import os

        from components.devstack.stack import data_root as stack_data_root
        from components.devstack.stack import read_state, stack_env

        state = read_state(cfg)
        if state is None:
            print("error: no local stack is running in this workspace: run `servicetime stack up` first", file=sys.stderr)
            return 2
        os.environ.update(stack_env(state))  # the pipeline's steps inherit it: MLflow server, S3
        data_root = args.data_root or stack_data_root(state)
        args.run_uri = args.run_uri or (f"s3://{state['s3']['buckets']['artifacts']}/runs/"
                                        f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}")
        log.info("using the local stack: MLflow %s, data %s", os.environ["MLFLOW_TRACKING_URI"], data_root)
    if not DatasetStore(data_root).raw_batches():
        # Simulated data only where it cannot be mistaken for real data: the embedded
        # default's own workspace, or when asked. A mistyped --data-root is an error.
        if args.data_root or args.stack:
            if not args.simulate_if_empty:
                print(f"error: no weekly batches under {data_root}/raw (pass --simulate-if-empty to fill it "
                      "with simulated weeks)", file=sys.stderr)
                return 2
        log.info("no data under %s: generating %d weeks with the simulator", data_root, cfg.data.weeks)
        generate_raw(cfg.data, data_root)
    run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"  # two runs in one second stay apart
    run_uri = args.run_uri or join(str(Path(cfg.workspace) / "runs"), run_id)
    log_path = Path(cfg.workspace) / "logs" / f"run-{run_id}.log"
    print(f"servicetime run {run_id}: data {data_root}, records {run_uri}")
    print(f"  KFP's and Ray's output: {log_path}")
    summary = run_local(cfg, data_root, run_uri, last_weeks=args.last_weeks, log_path=log_path,
                        verbose=args.verbose, tune_trials=args.tune_trials)
    summary_path = args.summary or str(Path(cfg.workspace) / "summary.json")
    Storage().write_json(summary_path, summary)
    print()
    if summary.get("failure_tail"):
        print("\n".join(summary["failure_tail"]))
        print()
    print(render_text(summary))
    print(f"  wall time {summary['wall_seconds']:.0f} s; summary JSON: {summary_path}")
    return 0 if summary["status"] == "SUCCEEDED" else 1


def cmd_simulate(args: argparse.Namespace) -> int:
    from components.flows.loop import format_record, simulate

    cfg = _config(args, {"train.num_workers": args.workers} if args.workers is not None else None)
    records = simulate(cfg, args.weeks, start_week=args.start_week, corrupt_weeks=tuple(args.corrupt_week or ()))
    print()
    for r in records:
        print(format_record(r))
    retrains = [r.week for r in records if r.retrain_reason]
    print(f"\n{len(records)} weeks; retrained after weeks {retrains or 'none'}; "
          f"{sum(not r.accepted for r in records)} batch(es) rejected")
    print(f"history: {Path(cfg.workspace) / 'simulate' / 'history.json'} and history.png")
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    from pipelines.submit import cluster_config, compile_cluster_pipeline, compile_pipeline, compile_plan_pipeline

    if args.cluster:  # with the cluster's endpoints and Secret, for uploading in the KFP UI
        print(compile_cluster_pipeline(Path(args.out), cluster_config(_config(args)), plan=args.plan))
    elif args.plan:
        print(compile_plan_pipeline(args.out))
    else:
        print(compile_pipeline(args.out))
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from pipelines.submit import submit, upload

    cfg = _config(args)
    if args.upload:  # the pipeline waits in the dashboard; a run starts only with --cron
        print(json.dumps(upload(cfg, args.host, version=args.version, experiment=args.experiment,
                                recurring_cron=args.cron, namespace=args.namespace, plan=args.plan), indent=2))
        return 0
    print(json.dumps(submit(cfg, args.host, recurring_cron=args.cron, experiment=args.experiment,
                            data_root=args.data_root, namespace=args.namespace), indent=2))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """The RayJob entry point: train from a features location, write the result location."""
    from components.cluster.train_job import train_entrypoint

    train_entrypoint(args.features, args.train_config, args.out)
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    """Search the model's settings; ``--features``/``--out`` is the RayJob's form (staged inputs on S3)."""
    if args.features:
        from components.cluster.tune_job import tune_entrypoint

        if not (args.config_uri and args.out):
            print("error: --features needs --config-uri and --out (the RayJob's staged inputs)", file=sys.stderr)
            return 2
        tune_entrypoint(args.features, args.config_uri, args.out, args.trials)
        return 0
    from components.flows.tune import tune_workspace

    cfg = _config(args)
    s = tune_workspace(cfg, _data_root(cfg, args), args.trials)
    print(f"tuned {s['trials']} trials in {s['seconds']:.0f} s ({s['early_stopped']} stopped early by ASHA): "
          f"best val MAE {s['best_val_mae_s']:.1f} s (trial {s['best_trial']}) vs defaults "
          f"{s['defaults_val_mae_s']:.1f} s, {s['improvement_pct']:.1f} % better")
    print("  best settings: " + ", ".join(f"{k}={v}" for k, v in s["best_settings"].items()))
    print(f"  {s['best_path']} (the next `servicetime run` or `train` uses it; set train.use_tuned=false to not)")
    print(f"  report {s['report_path']}; MLflow run {s['mlflow_run_id']} with {len(s['child_run_ids'])} child runs")
    return 0


# --- cluster ----------------------------------------------------------------------------------

def cmd_cluster_render(args: argparse.Namespace) -> int:
    from components.render.install import run_render

    return run_render(args)


def cmd_cluster_fetch(args: argparse.Namespace) -> int:
    from components.render import upstream

    print(upstream.fetch(args.dest))
    return 0


# --- registry ---------------------------------------------------------------------------------

def cmd_model_rollback(args: argparse.Namespace) -> int:
    from components.learn import tracking

    cfg = _config(args)
    tracking.setup(cfg)
    try:
        out = tracking.rollback(cfg, args.to)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"champion of {out['name']}: version {out['from']} -> {out['to']}")
    return 0


def cmd_model_show(args: argparse.Namespace) -> int:
    from mlflow import MlflowClient

    from components.learn import tracking

    cfg = _config(args)
    tracking.setup(cfg)
    name = tracking.model_name(cfg)
    client = MlflowClient()
    versions = sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version))
    by_version: dict[str, list[str]] = {}
    if versions:
        for alias, version in client.get_registered_model(name).aliases.items():
            by_version.setdefault(str(version), []).append(alias)
    for v in versions:
        aliases = ",".join(sorted(by_version.get(str(v.version), [])))
        print(f"{name} v{v.version:<4} {aliases:<22} run {v.run_id}  data {v.tags.get('data_version', '?')}")
    if not versions:
        print(f"no versions of {name} registered in {tracking.tracking_uri(cfg)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="servicetime", description=__doc__)
    add_global_options(p)
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="generate and validate data").add_subparsers(dest="data_command", required=True)
    g = data.add_parser("generate", help="simulate weekly delivery batches")
    g.add_argument("--weeks", type=int)
    g.add_argument("--seed", type=int)
    g.add_argument("--out", help="root URI (local path or s3://bucket/prefix); batches land in <out>/raw")
    g.set_defaults(func=cmd_data_generate)
    v = data.add_parser("validate", help="validate one batch; exit 1 when rejected")
    v.add_argument("batch", help="Parquet batch URI")
    v.add_argument("--reference", help="reference stats (.json) or a reference batch (.parquet)")
    v.add_argument("--report", help="where to write the JSON report (a .md summary goes beside it)")
    v.add_argument("--quarantine", help="where to write quarantined rows (Parquet)")
    v.set_defaults(func=cmd_data_validate)

    o = data.add_parser("orders", help="simulate next week's planned stops (the input of `plan`)")
    o.add_argument("--out", required=True, help="Parquet URI to write")
    o.add_argument("--week", type=int, help="week index (default: the week after the data under --data-root)")
    o.add_argument("--data-root", help="dataset root URI (default: <workspace>/data)")
    o.add_argument("--with-labels", action="store_true", help="keep the real service times, to measure coverage")
    o.set_defaults(func=cmd_data_orders)

    pl = sub.add_parser("plan", help="score planned stops in batch: service times, intervals, arrival windows")
    pl.add_argument("--orders", required=True, help="Parquet of planned stops: planning columns plus delivery_id")
    pl.add_argument("--out", required=True, help="Parquet URI for the plan (one row per stop, in route order)")
    pl.add_argument("--model-uri", help="a model URI or bundle path (default: the registry's champion)")
    pl.add_argument("--calibration", help="labelled held-out weeks (Parquet) to fit the windows on "
                                          "(default: the calibration saved with the model)")
    pl.add_argument("--summary", help="also write the summary as JSON here")
    pl.set_defaults(func=cmd_plan)

    r = sub.add_parser("run", help="run the whole pipeline on the embedded default")
    r.add_argument("--data-root", help="dataset root URI (default: <workspace>/data)")
    r.add_argument("--run-uri", help="where the run's step records and summary go")
    r.add_argument("--summary", help="JSON summary path (default: <workspace>/summary.json)")
    r.add_argument("--weeks", type=int, help="weeks to simulate when there is no data yet")
    r.add_argument("--last-weeks", type=int, default=0, help="use only the newest N weeks (0: all)")
    r.add_argument("--workers", type=int, help="Ray workers (0: train in-process)")
    r.add_argument("--epochs", type=int)
    r.add_argument("--tune-trials", type=int, default=0,
                   help="search the model's settings with this many Ray Tune trials before training (0: off)")
    r.add_argument("--stack", action="store_true", help="use the running local stack (S3 + MLflow server) instead of files")
    r.add_argument("--simulate-if-empty", action="store_true",
                   help="fill an empty --data-root (or the stack's bucket) with simulated weeks; "
                        "the default workspace is filled without asking")
    r.add_argument("--verbose", action="store_true", help="also print KFP's and Ray's own output")
    r.set_defaults(func=cmd_run)

    sim = sub.add_parser("simulate", help="weeks keep arriving: validate, monitor, retrain, promote")
    sim.add_argument("--weeks", type=int, default=8, help="new weeks to simulate")
    sim.add_argument("--start-week", type=int, help="weeks of history before the loop (default: data.weeks)")
    sim.add_argument("--corrupt-week", type=int, action="append", help="deliver this week with a feed bug (minutes)")
    sim.add_argument("--workers", type=int, help="Ray workers for retraining (0: in-process)")
    sim.set_defaults(func=cmd_simulate)

    c = sub.add_parser("compile", help="write the pipeline YAML")
    c.add_argument("--out", default="servicetime-pipeline.yaml")
    c.add_argument("--cluster", action="store_true", help="compile with the cluster's services and S3 Secret")
    c.add_argument("--plan", action="store_true", help="the planning pipeline (servicetime-plan) instead")
    c.set_defaults(func=cmd_compile)
    s = sub.add_parser("submit", help="create a run (or a recurring run) on a KFP endpoint")
    s.add_argument("--host", required=True, help="KFP API URL, e.g. http://localhost:8081 through the SSH tunnel")
    s.add_argument("--cron", help="create a recurring run with this cron schedule instead of one run")
    s.add_argument("--experiment", default="servicetime")
    s.add_argument("--data-root", help="dataset root on the cluster (default: s3://<data bucket>)")
    s.add_argument("--namespace", default=None, help="KFP namespace (multi-user installs only)")
    s.add_argument("--upload", action="store_true",
                   help="upload the pipeline as 'servicetime' (a version per commit) instead of starting a run; "
                        "with --cron, also a recurring run of that version")
    s.add_argument("--version", help="pipeline version name for --upload (default: the git commit)")
    s.add_argument("--plan", action="store_true", help="with --upload: the planning pipeline (servicetime-plan)")
    s.set_defaults(func=cmd_submit)
    t = sub.add_parser("train", help="train from prepared features (the RayJob entry point)")
    t.add_argument("--features", required=True)
    t.add_argument("--config", dest="train_config", required=True)
    t.add_argument("--out", required=True)
    t.set_defaults(func=cmd_train)

    tu = sub.add_parser("tune", help="search the model's settings with Ray Tune; the next run trains with the best")
    tu.add_argument("--trials", type=int, default=8, help="trials (trial 0 is the configured defaults)")
    tu.add_argument("--data-root", help="dataset root URI (default: <workspace>/data; simulated when empty)")
    tu.add_argument("--features", help=argparse.SUPPRESS)  # the RayJob's form: staged features on S3
    tu.add_argument("--config-uri", help=argparse.SUPPRESS)
    tu.add_argument("--out", help=argparse.SUPPRESS)
    tu.set_defaults(func=cmd_tune)

    cl = sub.add_parser("cluster", help="the cluster install, rendered offline").add_subparsers(
        dest="cluster_command", required=True)
    cr = cl.add_parser("render", help="write every object the bootstrap applies (plus samples) as one YAML")
    from components.render.install import add_render_arguments

    add_render_arguments(cr)
    cr.set_defaults(func=cmd_cluster_render)
    cf = cl.add_parser("fetch-upstream", help="download the pinned KFP, Argo and KubeRay trees into the cache")
    cf.add_argument("--dest", type=Path, help="folder to fill (default: the cache)")
    cf.set_defaults(func=cmd_cluster_fetch)

    from components.cli.serve import add_serve_parser, add_stack_parser

    add_serve_parser(sub)
    add_stack_parser(sub)
    for module in COMMAND_GROUPS:
        importlib.import_module(module).add_parser(sub)

    m = sub.add_parser("model", help="the model registry").add_subparsers(dest="model_command", required=True)
    rb = m.add_parser("rollback", help="move the champion alias back to the previous champion")
    rb.add_argument("--to", help="a specific version instead of the previous champion")
    rb.set_defaults(func=cmd_model_rollback)
    m.add_parser("list", help="registered versions and their aliases").set_defaults(func=cmd_model_show)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one command; a known failure is one line on stderr (the traceback with ``--verbose`` where
    the command has it, or ``SERVICETIME_VERBOSE=1``), exit status 2 for bad input, 1 otherwise."""
    import os

    from pydantic import ValidationError

    configure()
    args = build_parser().parse_args(argv)
    verbose = bool(getattr(args, "verbose", False)) or os.environ.get("SERVICETIME_VERBOSE", "") not in ("", "0")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("servicetime: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        # Storage's errors only where a command loaded it: the bootstrap's small venv has no pandas.
        storage = sys.modules.get("components.core.storage")
        known = (ValidationError, FileNotFoundError, PermissionError, ValueError, OSError)
        if not isinstance(exc, known + ((storage.ServiceUnavailable, storage.StorageError) if storage else ())):
            raise
        if verbose:
            log.exception("%s failed", args.command)
        if isinstance(exc, ValidationError):  # pydantic's own text is a dozen lines; one per field is enough
            fields = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']} (got {e.get('input')!r})"
                               for e in exc.errors())
            message = f"invalid config: {fields}"
        elif isinstance(exc, OSError) and exc.filename and exc.strerror:
            message = f"{exc.strerror}: {exc.filename}"
        else:
            message = " ".join(str(exc).split()) or type(exc).__name__
        hint = "" if verbose else " (SERVICETIME_VERBOSE=1 for the traceback)"
        print(f"servicetime: error: {message}{hint}", file=sys.stderr)
        return 2 if isinstance(exc, (ValidationError, FileNotFoundError, ValueError)) else 1


if __name__ == "__main__":
    sys.exit(main())
