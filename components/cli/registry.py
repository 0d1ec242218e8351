"""``servicetime model rollback|list``: the model registry's champion and versions."""

from __future__ import annotations

import argparse
import sys

from components.cli.options import config_from_args as _config


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



def add_parser(sub) -> None:
    m = sub.add_parser("model", help="the model registry").add_subparsers(dest="model_command", required=True)
    rb = m.add_parser("rollback", help="move the champion alias back to the previous champion")
    rb.add_argument("--to", help="a specific version instead of the previous champion")
    rb.set_defaults(func=cmd_model_rollback)
    m.add_parser("list", help="registered versions and their aliases").set_defaults(func=cmd_model_show)
