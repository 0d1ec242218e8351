"""``servicetime run|simulate|compile|submit``: the pipeline, locally, in a loop, or on a KFP endpoint."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import uuid
from pathlib import Path

from components.cli.options import add_data_root
from components.cli.options import config_from_args as _config
from components.cli.options import data_root as _data_root

log = logging.getLogger("servicetime")


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
            print(
                "error: no local stack is running in this workspace: run `servicetime stack up` first", file=sys.stderr
            )
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
    records = simulate(cfg, args.weeks, start_week=args.start_week, corrupt_weeks=tuple(args.corrupt_week or ()),
                       frozen=args.frozen)
    print()
    for r in records:
        print(format_record(r))
    retrains = [r.week for r in records if r.retrain_reason]
    print(f"\n{len(records)} weeks; retrained after weeks {retrains or 'none'}; "
          f"{sum(not r.accepted for r in records)} batch(es) rejected")
    if args.frozen:
        triggered = [r.week for r in records if r.triggers and not r.retrain_reason]
        print(f"champion kept frozen; retraining would have been triggered after weeks {triggered or 'none'}")
    print(f"history: {Path(cfg.workspace) / 'simulate' / 'history.json'} and history.png")
    return 0


def _kind(args: argparse.Namespace) -> str:
    return "plan" if args.plan else "monitor" if getattr(args, "monitor", False) else "train"


def cmd_compile(args: argparse.Namespace) -> int:
    from pipelines.submit import cluster_config, compile_cluster_pipeline, compile_pipeline, compile_plan_pipeline

    if args.cluster:  # with the cluster's endpoints and Secret, for uploading in the KFP UI
        print(compile_cluster_pipeline(Path(args.out), cluster_config(_config(args)), kind=_kind(args)))
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
                                recurring_cron=args.cron, namespace=args.namespace, kind=_kind(args)), indent=2))
        return 0
    print(json.dumps(submit(cfg, args.host, recurring_cron=args.cron, experiment=args.experiment,
                            data_root=args.data_root, namespace=args.namespace), indent=2))
    return 0


def add_parser(sub) -> None:
    r = sub.add_parser("run", help="run the whole pipeline on the embedded default")
    add_data_root(r)
    r.add_argument("--run-uri", help="where the run's step records and summary go")
    r.add_argument("--summary", help="JSON summary path (default: <workspace>/summary.json)")
    r.add_argument("--weeks", type=int, help="weeks to simulate when there is no data yet")
    r.add_argument("--last-weeks", type=int, default=0, help="use only the newest N weeks (0: all)")
    r.add_argument("--workers", type=int, help="Ray workers (0: train in-process)")
    r.add_argument("--epochs", type=int)
    r.add_argument("--tune-trials", type=int, default=0,
                   help="search the model's settings with this many Ray Tune trials before training (0: off)")
    r.add_argument(
        "--stack", action="store_true", help="use the running local stack (S3 + MLflow server) instead of files"
    )
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
    sim.add_argument("--frozen", action="store_true",
                     help="keep the first champion; only record what would have triggered retraining")
    sim.set_defaults(func=cmd_simulate)

    c = sub.add_parser("compile", help="write the pipeline YAML")
    c.add_argument("--out", default="servicetime-pipeline.yaml")
    c.add_argument("--cluster", action="store_true", help="compile with the cluster's services and S3 Secret")
    c.add_argument("--plan", action="store_true", help="the planning pipeline (servicetime-plan) instead")
    c.add_argument("--monitor", action="store_true", help="with --cluster: the labels join (servicetime-monitor)")
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
    s.add_argument("--monitor", action="store_true", help="with --upload: the labels join (servicetime-monitor)")
    s.set_defaults(func=cmd_submit)
