"""The options every command group shares (``--config``, ``--workspace``, ``--set``) and the config
they make: one place for the main CLI, ``python -m components.serving`` and each group."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from components.core.config import Config, load_config


def add_global_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config on top of the defaults")
    parser.add_argument("--workspace", help="local folder for data, runs, MLflow (default: ./workspace)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override a config key, e.g. train.epochs=3")


def add_data_root(parser: argparse.ArgumentParser, default: str = "<workspace>/data") -> None:
    """The dataset root option of the commands that read or clean the data."""
    parser.add_argument("--data-root", help=f"dataset root URI (default: {default})")


def overrides(pairs: list[str] | None) -> dict:
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set expects key=value, got {pair!r}")
        parsed = yaml.safe_load(value)
        # YAML reads 2024-09-09 as a date; config fields that hold dates are strings.
        out[key] = parsed.isoformat() if hasattr(parsed, "isoformat") else parsed
    return out


def config_from_args(args: argparse.Namespace, extra: dict | None = None) -> Config:
    over = overrides(getattr(args, "set", []))
    if getattr(args, "workspace", None):
        over["workspace"] = args.workspace
    over.update(extra or {})
    cfg = load_config(args.config, over)
    # Steps run in subprocesses with other working directories: pin the workspace.
    return cfg.model_copy(update={"workspace": str(Path(cfg.workspace).resolve())})


def data_root(cfg: Config, args: argparse.Namespace) -> str:
    return getattr(args, "data_root", None) or str(Path(cfg.workspace) / "data")
