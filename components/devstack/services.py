"""One local service as a process of its own session: started, watched until healthy, stopped by group.

A service is a dict recorded in the stack's state (pid, start time in clock ticks, log, health URL).
The start time guards against a reused pid: a recorded service whose pid now belongs to another
process is "reused" and left alone. Linux only (``/proc``).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx

from components.devstack.process import stop_process_group


class StackError(RuntimeError):
    """The stack could not start (the message names the service and its log)."""



def start_ticks(pid: int) -> int | None:
    """The process start time in clock ticks since boot (Linux), None when unknown or gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


def leader_state(service: dict) -> str:
    """"running", "gone" (exited, or a zombie), or "reused" (the pid now belongs to another process)."""
    pid = service.get("pid")
    if not pid:
        return "gone"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "gone"
    except PermissionError:
        return "reused"
    if zombie(pid):
        return "gone"
    recorded, now = service.get("start_ticks"), start_ticks(pid)
    return "reused" if recorded is not None and now is not None and recorded != now else "running"


def alive(service: dict) -> bool:
    """True while the recorded process runs (same pid and the same start time)."""
    return leader_state(service) == "running"


def stop_service(service: dict, timeout_s: float = 10.0) -> str:
    """SIGTERM the service's process group, wait, then SIGKILL what is left. Returns what happened."""
    pid = service.get("pid")
    if not pid:
        return "not started"
    if leader_state(service) == "reused":
        return f"not running (pid {pid} now belongs to another process: left alone)"
    return stop_process_group(pid, timeout_s)


def spawn(cmd: list[str], log: Path, env: dict[str, str], cwd: Path) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                cwd=cwd, start_new_session=True)


def log_tail(path: str | Path, lines: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def healthy(url: str, accept_any: bool = False) -> bool:
    try:
        r = httpx.get(url, timeout=2.0)
    except httpx.HTTPError:
        return False
    return r.status_code < 500 if accept_any else r.status_code == 200


def wait_healthy(name: str, service: dict, proc: subprocess.Popen | None, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise StackError(f"{name} exited with {proc.returncode}; log {service['log']}:\n{log_tail(service['log'])}")
        if healthy(service["health"], service.get("health_any_status", False)):
            return
        time.sleep(0.5)
    raise StackError(f"{name} not healthy at {service['health']} after {timeout_s:.0f} s; log {service['log']}:\n"
                     f"{log_tail(service['log'])}")

