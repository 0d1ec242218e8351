"""``servicetime stack up|down|status|env``: the local platform (``components.devstack.stack``),
argument parsing only."""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys

from components.cli.options import config_from_args as _config


def _quiet() -> None:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per health probe otherwise


def _ports(args: argparse.Namespace):
    from components.devstack.stack import StackPorts

    base = StackPorts.free() if args.free_ports else StackPorts.from_platform()
    return base.replace(s3=args.s3_port, mlflow=args.mlflow_port, prometheus=args.prometheus_port,
                        model_server=args.server_port)


def cmd_stack_up(args: argparse.Namespace) -> int:
    from components.devstack import stack

    _quiet()
    cfg = _config(args)
    try:
        stack.up(cfg, _ports(args), timeout_s=args.timeout, scrape_interval=args.scrape_interval)
    except stack.StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(stack.render_status(stack.status(cfg)))
    print(f"\nstate: {stack.state_path(cfg)}")
    print("use it:  eval \"$(servicetime stack env)\"   # MLflow and S3 for `servicetime run`")
    return 0


def cmd_stack_down(args: argparse.Namespace) -> int:
    from components.devstack import stack

    _quiet()
    stopped = stack.down(_config(args))
    for name, outcome in stopped.items():
        print(f"{name:<13} {outcome}")
    if not stopped:
        print("no stack recorded in this workspace")
    return 0


def cmd_stack_status(args: argparse.Namespace) -> int:
    from components.devstack import stack

    _quiet()
    report = stack.status(_config(args))
    print(json.dumps(report, indent=2) if args.json else stack.render_status(report))
    return 0 if report.get("services") and all(s["healthy"] for s in report["services"].values()) else 1


def cmd_stack_env(args: argparse.Namespace) -> int:
    from components.devstack import stack

    state = stack.read_state(_config(args))
    if state is None:
        print("error: no stack recorded in this workspace; run `servicetime stack up`", file=sys.stderr)
        return 1
    for key, value in stack.stack_env(state).items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "stack", help="the local platform as plain processes: S3, MLflow, model server, Prometheus"
    )
    sub = p.add_subparsers(dest="stack_command", required=True)
    up = sub.add_parser("up", help="start S3 (SeaweedFS), MLflow, the model server and Prometheus; wait until healthy")
    up.add_argument("--free-ports", action="store_true", help="pick free loopback ports instead of the platform's")
    up.add_argument("--s3-port", type=int)
    up.add_argument("--mlflow-port", type=int)
    up.add_argument("--prometheus-port", type=int)
    up.add_argument("--server-port", type=int)
    up.add_argument("--scrape-interval", help="Prometheus scrape interval, e.g. 5s (default: the rendered config's)")
    up.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for each service")
    up.set_defaults(func=cmd_stack_up)
    sub.add_parser("down", help="stop exactly what `stack up` started").set_defaults(func=cmd_stack_down)
    st = sub.add_parser("status", help="each service: pid, URL, healthy; exit 1 unless all are")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_stack_status)
    sub.add_parser("env", help="print export lines pointing MLflow and S3 clients at the stack").set_defaults(
        func=cmd_stack_env)
    return p
