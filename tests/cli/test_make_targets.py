"""The commands the Makefile runs parse: `make run` and `make compile` must not die on a typo."""

import re
from pathlib import Path

import pytest

from components.cli.main import build_parser

MAKEFILE = Path(__file__).resolve().parents[2] / "Makefile"


def recipe(target: str) -> str:
    body = re.search(rf"^{target}:.*\n((?:\t.*\n)+)", MAKEFILE.read_text(), re.M).group(1)
    return next(line.strip() for line in body.splitlines() if "bin/servicetime" in line)


@pytest.mark.parametrize("target", ["run", "compile"])
def test_make_target_command_line_parses(target, tmp_path):
    line = recipe(target).replace("$(VENV)/bin/servicetime", "").replace("$(WORKSPACE)", str(tmp_path))
    args = build_parser().parse_args(line.split())  # argparse exits (SystemExit) on unknown arguments
    assert args.command == target and args.workspace == str(tmp_path)
