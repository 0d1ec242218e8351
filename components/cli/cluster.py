"""``servicetime cluster render|fetch-upstream``: the cluster install, rendered offline."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_cluster_render(args: argparse.Namespace) -> int:
    from components.render.install import run_render

    return run_render(args)


def cmd_cluster_fetch(args: argparse.Namespace) -> int:
    from components.render import upstream

    print(upstream.fetch(args.dest))
    return 0


def add_parser(sub) -> None:
    cl = sub.add_parser("cluster", help="the cluster install, rendered offline").add_subparsers(
        dest="cluster_command", required=True)
    cr = cl.add_parser("render", help="write every object the bootstrap applies (plus samples) as one YAML")
    from components.render.install import add_render_arguments

    add_render_arguments(cr)
    cr.set_defaults(func=cmd_cluster_render)
    cf = cl.add_parser("fetch-upstream", help="download the pinned KFP, Argo and KubeRay trees into the cache")
    cf.add_argument("--dest", type=Path, help="folder to fill (default: the cache)")
    cf.set_defaults(func=cmd_cluster_fetch)
