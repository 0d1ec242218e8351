"""``servicetime serve`` and ``servicetime stack up|down|status``: argument parsing only.

``add_serve_parser`` and ``add_stack_parser`` register the subcommands on the main
CLI's subparsers; the functions read the global ``--config``/``--workspace``/``--set``
options through ``components.cli.options``. ``python -m components.serving`` runs
the same commands without the main CLI.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

log = logging.getLogger("servicetime")

APP_FACTORY = "components.serving.app:app_from_env"


def _config(args: argparse.Namespace):
    from components.cli.options import config_from_args

    return config_from_args(args)


# --- serve -------------------------------------------------------------------------------


def serve(settings, host: str, port: int, workers: int = 1, access_log: bool = False, log_level: str = "info") -> None:
    """Run uvicorn on the app factory; blocks until SIGTERM/SIGINT (graceful shutdown)."""
    import uvicorn

    from components.serving.metrics import MULTIPROC_ENV

    os.environ.update(settings.to_env())
    owned_dir = None
    if workers > 1:
        # Each worker writes its samples here; /metrics on any worker aggregates them.
        if not os.environ.get(MULTIPROC_ENV):
            owned_dir = tempfile.mkdtemp(prefix="servicetime-metrics-")
            os.environ[MULTIPROC_ENV] = owned_dir
        else:  # a folder from an earlier run holds dead workers' samples
            folder = Path(os.environ[MULTIPROC_ENV])
            folder.mkdir(parents=True, exist_ok=True)
            for stale in folder.glob("*.db"):
                stale.unlink()
    log.info("model server on http://%s:%d (%d worker%s), model %s", host, port, workers, "s" if workers > 1 else "",
             settings.model_uri or settings.model_path)
    try:
        uvicorn.run(APP_FACTORY, factory=True, host=host, port=port, workers=workers, access_log=access_log,
                    log_level=log_level, timeout_graceful_shutdown=10)
    finally:
        if owned_dir:
            shutil.rmtree(owned_dir, ignore_errors=True)


def cmd_serve(args: argparse.Namespace) -> int:
    from components.core.platform import platform
    from components.serving.settings import settings_from_config

    cfg = _config(args)
    if args.model_uri and args.model_path:
        print("error: give --model-uri or --model-path, not both", file=sys.stderr)
        return 2
    settings = settings_from_config(cfg, args.model_uri, args.model_path, args.reload_interval)
    host = args.host or cfg.serve.host
    port = args.port or cfg.serve.port or platform().ports.model_server
    serve(settings, host, port, args.workers or cfg.serve.workers, access_log=args.access_log)
    return 0


def add_serve_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("serve", help="run the model server (FastAPI + uvicorn)",
                              description="Serve the champion from MLflow (default), a model URI or a bundle path.")
    p.add_argument("--host", help="interface to bind (default: serve.host)")
    p.add_argument("--port", type=int, help="port (default: serve.port, else the platform's model_server port)")
    p.add_argument("--model-uri", help="MLflow model URI, e.g. models:/servicetime@champion (the default)")
    p.add_argument("--model-path", help="a local model bundle directory instead of MLflow")
    p.add_argument("--workers", type=int, help="uvicorn worker processes (default: serve.workers)")
    p.add_argument("--reload-interval", type=float, help="seconds between checks of the alias (default: serve.reload_interval_s)")
    p.add_argument("--access-log", action="store_true", help="log every request (off: metrics count them)")
    p.set_defaults(func=cmd_serve)
    return p


# --- stack -------------------------------------------------------------------------------


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


def add_stack_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("stack", help="the local platform as plain processes: S3, MLflow, model server, Prometheus")
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


# --- standalone ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m components.serving", description=__doc__)
    from components.cli.options import add_global_options

    add_global_options(p)
    sub = p.add_subparsers(dest="command", required=True)
    add_serve_parser(sub)
    add_stack_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    from components.core.logs import configure

    configure()
    args = build_parser().parse_args(argv)
    return args.func(args)
