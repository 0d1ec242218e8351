"""``servicetime data generate|validate|orders|forget|prune`` and ``servicetime plan``: the data and the plan."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from components.cli.options import add_data_root
from components.cli.options import config_from_args as _config
from components.cli.options import data_root as _data_root

log = logging.getLogger("servicetime")


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


def cmd_data_forget(args: argparse.Namespace) -> int:
    from components.data.forget import forget_customer
    from components.serving.monitor import prediction_log_uri

    cfg = _config(args)
    roots = [cfg.workspace, prediction_log_uri(cfg), *(args.also or [])]
    from components.learn.history_store import republish

    data_root = _data_root(cfg, args)
    key = args.customer
    if args.customer_id is not None:  # an erasure request names the person; the data holds only their key
        from components.core.keys import pseudonymise, require_salt

        key = pseudonymise([args.customer_id], require_salt(why="--customer-id names a raw id"))[0]
    out = forget_customer(key, data_root, roots, reason=args.reason)
    republish(data_root, f"forgot a customer: {args.reason}")  # the servers follow it, and drop the old one
    print(f"forgot customer {out.key}: {out.rows_removed:,} rows removed ({out.deliveries:,} deliveries) from "
          f"{len(out.files)} files and {len(out.versions)} dataset versions (new ids in datasets/reversioned.json); "
          "ingest drops the key from now on")
    for uri in out.unreadable:
        print(f"  not checked (unreadable Parquet): {uri}")
    return 0 if not out.unreadable else 1


def cmd_data_prune(args: argparse.Namespace) -> int:
    from components.core.storage import join
    from components.data.retention import prune
    from components.serving.monitor import prediction_log_uri

    cfg = _config(args)
    out = prune(cfg.retention, _data_root(cfg, args), prediction_log_uri(cfg), join(cfg.workspace, "logs"),
                cfg.train.checkpoint_uri or join(cfg.workspace, "checkpoints"), dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    print(f"{verb} {out.count} file(s): " + ", ".join(f"{len(v)} {k}" for k, v in out.removed.items())
          + f" (retention: {cfg.retention.model_dump()})")
    return 0


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
        line += (
            f"; on these stops' real arrivals (after each route's start): coverage {c['coverage']:.1%}, "
            f"early {c['early_share']:.1%}, "
            f"late {c['late_share']:.1%}, mean width {c['mean_width_s'] / 60:.0f} min"
        )
    print(line)
    if args.summary:
        from components.core.storage import Storage

        Storage().write_json(args.summary, s)
    return 0



def add_parser(sub) -> None:
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

    fg = data.add_parser("forget", help="tombstone a customer and remove their rows from every stored Parquet file")
    who = fg.add_mutually_exclusive_group(required=True)
    who.add_argument("--customer", help="the customer_key (the salted hash) to forget")
    who.add_argument("--customer-id", help="the customer's raw id, hashed with the secret salt "
                                           "(SERVICETIME_KEY_SALT) into the key to forget")
    fg.add_argument("--reason", default="erasure request", help="recorded with the tombstone and the new versions")
    add_data_root(fg)
    fg.add_argument("--also", action="append", help="another root to clean (e.g. an MLflow artifact store URI)")
    fg.set_defaults(func=cmd_data_forget)

    pr = data.add_parser("prune", help="apply the retention settings (retention.*) to what piles up")
    add_data_root(pr)
    pr.add_argument("--dry-run", action="store_true", help="list what would go, delete nothing")
    pr.set_defaults(func=cmd_data_prune)

    o = data.add_parser("orders", help="simulate next week's planned stops (the input of `plan`)")
    o.add_argument("--out", required=True, help="Parquet URI to write")
    o.add_argument("--week", type=int, help="week index (default: the week after the data under --data-root)")
    o.add_argument("--with-labels", action="store_true", help="keep the real service times, to measure coverage")
    add_data_root(o)
    o.set_defaults(func=cmd_data_orders)

    pl = sub.add_parser("plan", help="score planned stops in batch: service times, intervals, arrival windows")
    pl.add_argument("--orders", required=True, help="Parquet of planned stops: planning columns plus delivery_id")
    pl.add_argument("--out", required=True, help="Parquet URI for the plan (one row per stop, in route order)")
    pl.add_argument("--model-uri", help="a model URI or bundle path (default: the registry's champion)")
    pl.add_argument("--calibration", help="labelled held-out weeks (Parquet) to fit the windows on "
                                          "(default: the calibration saved with the model)")
    pl.add_argument("--summary", help="also write the summary as JSON here")
    pl.set_defaults(func=cmd_plan)
