"""The ``servicetime`` command line. It only parses arguments and calls the library."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from components.cli.options import add_global_options
from components.core.logs import configure

log = logging.getLogger("servicetime")

# Command groups in their own modules of this package, in the order `--help` lists them:
# each has add_parser(subparsers).
COMMAND_GROUPS: tuple[str, ...] = (
    "components.cli.data",
    "components.cli.pipeline",
    "components.cli.training",
    "components.cli.cluster",
    "components.cli.serve",
    "components.cli.stack",
    "components.cli.monitor",
    "components.cli.check",
    "components.cli.chaos",
    "components.cli.registry",
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="servicetime", description=__doc__)
    add_global_options(p)
    sub = p.add_subparsers(dest="command", required=True)
    for module in COMMAND_GROUPS:
        importlib.import_module(module).add_parser(sub)
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
