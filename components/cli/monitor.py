"""``servicetime monitor``: online quality from the prediction log and the arrived labels.

    servicetime monitor run [--data-root URI] [--log URI] [--out URI] [--no-mlflow]
    servicetime monitor show [--out URI]
"""

from __future__ import annotations

import argparse
import json

from components.cli.options import add_data_root


def _config(args: argparse.Namespace):
    from components.cli.options import config_from_args as config

    return config(args)


def _print(report: dict) -> None:
    print(f"online report {report.get('version')}: {report['rows_joined']} of {report['rows_logged']} logged "
          f"predictions joined with a label (batches: {', '.join(report['batches']) or 'none'})")
    print(f"  {'slice':24s} {'rows':>7s} {'MAE':>7s} {'bias':>7s} {'late':>6s} {'cover':>6s}")
    def f(row: dict, key: str, fmt: str) -> str:
        return format(row[key], fmt) if row.get(key) is not None else "-"

    for row in report["slices"]:
        print(f"  {row['slice']:24s} {row['rows']:7d} {f(row, 'mae', '7.1f'):>7s} {f(row, 'bias', '+7.1f'):>7s} "
              f"{f(row, 'late_share', '6.1%'):>6s} {f(row, 'coverage', '6.1%'):>6s}")


def cmd_run(args: argparse.Namespace) -> int:
    from components.serving.monitor import run_monitor

    cfg = _config(args)
    report = run_monitor(cfg, args.data_root, args.log, args.out, mlflow_log=not args.no_mlflow)
    if args.json:
        print(json.dumps(report, indent=1, default=str))
    else:
        _print(report)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from components.serving.monitor import online_report_uri, read_latest_report

    cfg = _config(args)
    report = read_latest_report(args.out or online_report_uri(cfg))
    if report is None:
        print("no online report yet: run `servicetime monitor run`")
        return 1
    _print(report)
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("monitor", help="online quality: logged predictions joined with arrived labels")
    sub = p.add_subparsers(dest="monitor_command", required=True)
    r = sub.add_parser("run", help="join the prediction log with the arrived batches; write a versioned report")
    add_data_root(r)
    r.add_argument("--log", help="prediction log root (default: monitor.prediction_log_uri or <workspace>/predictions)")
    r.add_argument("--out", help="report root (default: monitor.report_uri or <workspace>/monitor)")
    r.add_argument("--no-mlflow", action="store_true", help="do not log the report to MLflow")
    r.add_argument("--json", action="store_true", help="print the whole report as JSON")
    r.set_defaults(func=cmd_run)
    s = sub.add_parser("show", help="print the latest online report")
    s.add_argument("--out", help="report root (default: monitor.report_uri or <workspace>/monitor)")
    s.set_defaults(func=cmd_show)
