"""The cluster rehearsal workflow (it runs on a hosted runner, not here): its scripts are sound
and it rehearses what the Chameleon path runs, with the platform's pins."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from components.core.platform import platform

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "cluster.yml"


def steps() -> list[dict]:
    return yaml.safe_load(WORKFLOW.read_text())["jobs"]["k3d"]["steps"]


def scripts() -> list[str]:
    return [s["run"] for s in steps() if "run" in s]


def test_rehearses_the_bootstrap_the_submit_and_the_outcomes():
    text = "\n".join(scripts())
    assert "infra/bootstrap.sh" in text and "infra/port-forward.sh" in text
    assert "servicetime --config components/configs/tiny.yaml" in text and " submit --host " in text
    assert "SUCCEEDED" in text and "model-server-canary" in text and "/readyz" in text
    for path in ("infra/bootstrap.sh", "infra/port-forward.sh", "components/configs/tiny.yaml",
                 "k8s/overlays/rehearsal/kustomization.yaml", "infra/Dockerfile"):
        assert (ROOT / path).exists(), path
    assert "OVERLAY=rehearsal" in text


def test_k3s_version_is_the_platform_pin():
    env = yaml.safe_load(WORKFLOW.read_text())["jobs"]["k3d"]["env"]
    assert env["SERVICETIME_K3S"] == platform().versions.k3s.replace("+", "-")


def test_no_check_is_a_negation_that_errexit_ignores():
    """`! cmd` never fails a step under bash -e: every check must be able to fail."""
    for script in scripts():
        for line in script.splitlines():
            assert not re.match(r"\s*! ", line), line


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed (make system-deps)")
def test_step_scripts_pass_shellcheck(tmp_path):
    for i, script in enumerate(scripts()):
        body = re.sub(r"\$\{\{[^}]*\}\}", "X", script)  # GitHub expressions are filled in before bash runs
        path = tmp_path / f"step{i}.sh"
        path.write_text("#!/usr/bin/env bash\nset -euo pipefail\n" + body)
        proc = subprocess.run(["shellcheck", "-S", "warning", str(path)], capture_output=True, text=True)
        assert proc.returncode == 0, f"step {i}:\n{proc.stdout}"
