"""Process helpers for the local stack, the runs and the chaos scenarios: a free loopback port, the
processes a run started (found by an environment marker), and stopping a process group for sure.

Standard library only: the light CLI paths (upload, chaos listing) import it.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pids_with_env(name: str, value: str) -> list[int]:
    """Live pids (not this one, not zombies) whose environment has ``name=value``: how a run or a
    scenario finds every process it started, however they were re-parented."""
    needle = f"{name}={value}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            if needle in (proc / "environ").read_bytes().split(b"\0"):
                found.append(int(proc.name))
        except (OSError, IndexError):  # gone, or not ours to read
            continue
    return found


def reap(pid: int) -> None:
    """Collect ``pid``'s exit status if it is our child and has exited (so it leaves no zombie)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass  # not our child (a stack started by another command): its own parent reaps it


def group_alive(pgid: int) -> bool:
    """Any live (non-zombie) process left in the group."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    proc = Path("/proc")
    if not proc.exists():
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parts = entry.joinpath("stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(parts[2]) == pgid and parts[0] != "Z":
            return True
    return False


def stop_process_group(pid: int, timeout: float = 10.0) -> str:
    """SIGTERM the group, wait until no member is left, then SIGKILL whatever is. Returns what happened."""
    reap(pid)
    if not group_alive(pid):
        return "not running"
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return "not running"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reap(pid)
        if not group_alive(pid):
            return "stopped"
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # the group ended between the last check and the kill: nothing left to stop
    for _ in range(50):
        reap(pid)
        if not group_alive(pid):
            break
        time.sleep(0.1)
    reap(pid)
    return "killed after SIGTERM timeout"
