"""`make lab`: JupyterLab comes up on a free loopback port with the `servicetime` kernel, and goes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import psutil
import pytest

from components.devstack.process import free_port

REPO = Path(__file__).resolve().parents[2]
URL = re.compile(r"(http://127\.0\.0\.1:(\d+))/lab\?token=([0-9a-f]+)")

pytestmark = pytest.mark.slow


def _make_lab(port: int, *extra: str) -> subprocess.Popen:
    # Its own process group: everything make starts (the launcher, JupyterLab, kernels) is stopped together.
    return subprocess.Popen(["make", "--no-print-directory", "lab", f"LAB_PORT={port}", *extra], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _group_gone(pgid: int, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not [p for p in psutil.process_iter() if _pgid(p) == pgid]:
            return True
        time.sleep(0.2)
    return False


def _pgid(proc: psutil.Process) -> int | None:
    try:
        return os.getpgid(proc.pid) if proc.status() != psutil.STATUS_ZOMBIE else None
    except (ProcessLookupError, psutil.NoSuchProcess):
        return None


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if not _group_gone(proc.pid):
        os.killpg(proc.pid, signal.SIGKILL)


def test_make_lab_serves_the_servicetime_kernel_and_stops():
    port = free_port()
    proc = _make_lab(port)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 240
        match = None
        while match is None and time.monotonic() < deadline and proc.poll() is None:
            line = proc.stdout.readline()
            lines.append(line)
            match = URL.search(line)
        assert match, "no URL with a token printed:\n" + "".join(lines[-30:])
        base, printed_port, token = match.groups()
        assert int(printed_port) == port
        # Without the token the API refuses; with it the kernel spec is there, running this venv's Python.
        assert httpx.get(f"{base}/api/kernelspecs", timeout=10).status_code == 403
        specs = httpx.get(f"{base}/api/kernelspecs", headers={"Authorization": f"token {token}"}, timeout=10).json()
        spec = specs["kernelspecs"]["servicetime"]["spec"]
        assert Path(spec["argv"][0]) == REPO / ".venv" / "bin" / "python"
        contents = httpx.get(f"{base}/api/contents", headers={"Authorization": f"token {token}"}, timeout=10).json()
        assert "01_quickstart.ipynb" in {c["name"] for c in contents["content"]}  # rooted at notebooks/
    finally:
        _kill_group(proc)
        proc.wait(timeout=30)
    assert _group_gone(proc.pid, 5), "processes of make lab left running"
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/api/status", timeout=2)


def test_make_lab_exit_after_start():
    port = free_port()
    proc = _make_lab(port, "LAB_EXIT=1")
    try:
        out, _ = proc.communicate(timeout=240)
    finally:
        _kill_group(proc)
    assert proc.returncode == 0, out[-3000:]
    assert URL.search(out) and "'servicetime' kernel" in out
    assert _group_gone(proc.pid, 5)
