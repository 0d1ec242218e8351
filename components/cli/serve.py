"""``servicetime serve``: the model server, argument parsing only.

``python -m components.serving`` runs ``serve`` and ``stack`` (``components.cli.stack``)
without the rest of the CLI, as the model server's image does.
"""

from __future__ import annotations

import argparse
import logging
import os
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


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("serve", help="run the model server (FastAPI + uvicorn)",
                              description="Serve the champion from MLflow (default), a model URI or a bundle path.")
    p.add_argument("--host", help="interface to bind (default: serve.host)")
    p.add_argument("--port", type=int, help="port (default: serve.port, else the platform's model_server port)")
    p.add_argument("--model-uri", help="MLflow model URI, e.g. models:/servicetime@champion (the default)")
    p.add_argument("--model-path", help="a local model bundle directory instead of MLflow")
    p.add_argument("--workers", type=int, help="uvicorn worker processes (default: serve.workers)")
    p.add_argument(
        "--reload-interval", type=float, help="seconds between checks of the alias (default: serve.reload_interval_s)"
    )
    p.add_argument("--access-log", action="store_true", help="log every request (off: metrics count them)")
    p.set_defaults(func=cmd_serve)
    return p


# --- standalone ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from components.cli.stack import add_parser as add_stack_parser

    p = argparse.ArgumentParser(prog="python -m components.serving", description=__doc__)
    from components.cli.options import add_global_options

    add_global_options(p)
    sub = p.add_subparsers(dest="command", required=True)
    add_parser(sub)
    add_stack_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    from components.core.logs import configure

    configure()
    args = build_parser().parse_args(argv)
    return args.func(args)
