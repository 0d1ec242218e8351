"""The whole-install render, made once per session: test_install and test_security check the same objects."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from components.render import cluster as render
from components.render import reachability
from components.render.reachability import Network, Pod

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def objects(upstream_root, tmp_path_factory) -> list[dict]:
    """The CLI's render, read back: the same code path the bootstrap runs on the node."""
    out = tmp_path_factory.mktemp("render") / "all.yaml"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "components.cli.main",
            "cluster",
            "render",
            "--upstream",
            str(upstream_root),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return render.load_all(out.read_text())


@pytest.fixture(scope="session")
def pods(objects) -> list[Pod]:
    return reachability.pods_of(objects)


@pytest.fixture(scope="session")
def network(objects) -> Network:
    return Network(objects, extra_namespaces=["stranger"])
