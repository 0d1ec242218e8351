"""``servicetime check LAB`` (a receipt for one lab) and ``servicetime check collect FOLDER``
(the instructor's table)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from components.labs import receipts


def cmd_check(args: argparse.Namespace) -> int:
    from components.cli.options import config_from_args as _config

    cfg = _config(args)
    options = receipts.Options(tracking_uri=args.tracking_uri, kubeconfig=args.kubeconfig, namespace=args.namespace,
                               prometheus_url=args.prometheus_url)
    receipt = receipts.check_lab(args.lab, cfg.workspace, student=args.student, options=options, cfg=cfg)
    path = receipts.write_receipt(receipt, args.out)
    print(receipts.render_markdown(receipt))
    print(f"receipt: {path} (and {path.with_suffix('.md').name})")
    return 0 if receipt["passed"] else 1


def cmd_collect(args: argparse.Namespace) -> int:
    table = receipts.collect(args.folder)
    text = receipts.render_collected(table)
    if args.out:
        Path(args.out).write_text(text)
        Path(args.out).with_suffix(".json").write_text(json.dumps(
            {s: {k: r["passed"] for k, r in labs.items()} for s, labs in table.items()}, indent=2) + "\n")
    print(text)
    return 0 if table else 1


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    check = subparsers.add_parser("check", help="a receipt for a lab: what it produced, checked (or: collect receipts)")
    labs = check.add_subparsers(dest="check_command", required=True, metavar="LAB|collect")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--student", help=f"the student id on the receipt (default: ${receipts.STUDENT_ENV}, else the user)"
    )
    common.add_argument(
        "--out", help=f"receipts folder (default: ${receipts.RECEIPTS_ENV}, else ~/servicetime-receipts)"
    )
    common.add_argument("--tracking-uri", help="the MLflow to read (default: the workspace's, or the config's)")
    common.add_argument("--kubeconfig", help="read the RayJob outcome on this cluster (notebook 07)")
    common.add_argument("--namespace", help="the cluster namespace (default: the platform's)")
    common.add_argument("--prometheus-url", help="check targets and alerts on this Prometheus (notebook 07)")
    for lab in receipts.LABS.values():
        stem = lab.notebook.removesuffix(".ipynb")
        p = labs.add_parser(lab.key, aliases=[stem[3:]], parents=[common], help=f"notebook {lab.notebook}")
        p.set_defaults(func=cmd_check, lab=lab.key)
    c = labs.add_parser("collect", help="one table per student from a folder of receipts")
    c.add_argument("folder", help="a folder of receipts (any depth)")
    c.add_argument("--out", help="also write the table here (.md) and the pass/fail grid beside it (.json)")
    c.set_defaults(func=cmd_collect)
