"""``servicetime chaos list|run SCENARIO``: argument parsing only (the scenarios live in ``components.labs.chaos``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"


def _config(args: argparse.Namespace):
    from components.cli.options import config_from_args as config

    if args.tiny and not args.config:
        args.config = str(TINY)
    return config(args)


def cmd_list(args: argparse.Namespace) -> int:
    from components.labs.chaos import render_table

    print(render_table(markdown=args.markdown), end="")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from components.labs import chaos

    cfg = _config(args)
    names = [s.name for s in chaos.scenarios()] if args.scenario == "all" else [args.scenario]
    echo = (lambda text: None) if args.quiet else None
    outcomes = [chaos.run_scenario(name, cfg, keep=args.keep, timeout_s=args.timeout, echo=echo) for name in names]
    for outcome in outcomes:
        print()
        print(chaos.render_outcome(outcome))
        if outcome.workspace:
            print(f"  workspace kept: {outcome.workspace}")
    if args.json:
        Path(args.json).write_text(json.dumps([o.to_dict() for o in outcomes], indent=1) + "\n")
    return 0 if all(o.passed for o in outcomes) else 1


def add_parser(subparsers) -> None:
    from components.labs.chaos import scenarios

    chaos = subparsers.add_parser("chaos", help="break the system on purpose and check that it holds").add_subparsers(
        dest="chaos_command", required=True)
    ls = chaos.add_parser("list", help="the scenarios, against the lecture's and the paper's categories")
    ls.add_argument("--markdown", action="store_true", help="the whole table as Markdown")
    ls.set_defaults(func=cmd_list)
    run = chaos.add_parser("run", help="run one scenario (or all) in a temporary workspace; exit 1 when one fails")
    run.add_argument("scenario", choices=[*(s.name for s in scenarios()), "all"])
    run.add_argument("--tiny", action="store_true", help="the tiny config (seconds to minutes) instead of the default")
    run.add_argument("--keep", action="store_true", help="keep the temporary workspace (its path is printed)")
    run.add_argument("--timeout", type=float, default=2400.0, help="seconds before the scenario is stopped")
    run.add_argument("--json", help="also write the outcomes here as JSON")
    run.add_argument("--quiet", action="store_true", help="only the outcome, not the scenario's own output")
    run.set_defaults(func=cmd_run)
