"""A pipeline run's own local Ray: started in the background when the run starts, shared by its steps,
stopped with the run.

Every step of KFP's local runner is a fresh process. A training step that starts Ray itself pays Ray's
start-up (GCS, raylet, dashboard: 10-15 s on two cores) and its shutdown on the run's critical path.
Started when the run starts, by a helper process (``python -m components.learn.ray_runtime``), that
cost overlaps the data steps; the steps find it through ``ADDRESS_FILE_ENV`` and attach to it
(``connect``). The helper also creates the one actor Ray Train would otherwise wait 5 s for on
every training (the autoscaling coordinator, a detached actor that outlives each training).

Like a Ray a step would start itself, it has its dashboard on loopback and Ray's token authentication
(on by default for a local Ray; the token in ``~/.ray/auth_token``, made readable by this user only).
Ray 2.60's own gRPC ports (GCS, raylet, workers) listen on every interface whatever the node address,
so the token is what keeps others out. Its processes carry the run's environment, so the run's stop
ends them with the rest of the run; the helper also exits (shutting Ray down) when the process that
started it is gone.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)

ADDRESS_FILE_ENV = "SERVICETIME_RAY_ADDRESS_FILE"
AUTH_MODE_ENV = "RAY_AUTH_MODE"
ATTACH_TIMEOUT_S = 120.0  # how long a step waits for the run's Ray to come up before starting its own


def start_options(num_cpus: int) -> dict:
    """``ray.init`` options for a local Ray: the node's address and the dashboard on loopback (the
    dashboard serves the state API that Ray Train's placement-group cleaner polls)."""
    return {"num_cpus": max(int(num_cpus), os.cpu_count() or 1), "include_dashboard": True,
            "dashboard_host": "127.0.0.1", "_node_ip_address": "127.0.0.1", "configure_logging": False}


def start_helper(address_file: Path, num_cpus: int) -> subprocess.Popen:
    """Start the helper that brings up the run's Ray; ``ADDRESS_FILE_ENV`` is set in this process, so the
    steps it starts afterwards attach to it. Returns at once: Ray comes up while the data steps run."""
    address_file.parent.mkdir(parents=True, exist_ok=True)
    address_file.unlink(missing_ok=True)
    os.environ[ADDRESS_FILE_ENV] = str(address_file)
    # Ray reads the mode once, at import: set for the helper and every step before any imports Ray.
    # A local Ray checks a token by default; a Ray joined by its address only if this says so.
    os.environ.setdefault(AUTH_MODE_ENV, "token")
    helper = subprocess.Popen([sys.executable, "-m", "components.learn.ray_runtime", "--address-file",
                               str(address_file), "--cpus", str(num_cpus), "--parent", str(os.getpid())],
                              stdin=subprocess.DEVNULL)
    _write(address_file, {"pending": helper.pid})  # a step that finds the helper gone does not wait on it
    return helper


def _write(path: Path, answer: dict) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(answer))
    tmp.replace(path)  # a step never reads half a file


def _alive(pid: int) -> bool:
    """Running and not a zombie (a helper that died stays one until the run's process reaps it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def stop_helper(helper: subprocess.Popen, timeout_s: float = 15.0) -> None:
    """SIGTERM the helper (it shuts Ray down); SIGKILL if it does not go in ``timeout_s``."""
    if helper.poll() is None:
        helper.terminate()
        try:
            helper.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            helper.kill()
            helper.wait()
    address_file = os.environ.pop(ADDRESS_FILE_ENV, None)
    if address_file:
        Path(address_file).unlink(missing_ok=True)


def wait_for_address(address_file: Path, timeout_s: float = ATTACH_TIMEOUT_S) -> str | None:
    """The run's Ray address once the helper has written it; None if the helper failed or did not
    answer within ``timeout_s`` (the caller then starts a Ray of its own)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        answer = json.loads(address_file.read_text()) if address_file.exists() else {}
        if answer.get("error"):
            log.warning("the run's shared Ray did not start (%s); starting one for this step", answer["error"])
            return None
        if answer.get("address"):
            return answer["address"]
        if answer.get("pending") and not _alive(answer["pending"]):
            log.warning("the run's shared Ray helper (pid %s) is gone; starting a Ray for this step", answer["pending"])
            return None
        time.sleep(0.2)
    log.warning("the run's shared Ray did not come up within %.0f s; starting one for this step", timeout_s)
    return None


def connect(num_cpus: int, log_to_driver: bool = True) -> bool:
    """Attach to a Ray that is already there, else start one in this process.

    Inside a RayJob (``RAY_ADDRESS``): KubeRay's cluster. In a pipeline run: the run's shared Ray.
    Otherwise a local Ray of this process, which ends with it. Returns True when a Ray was started or
    attached here (so the caller may ``ray.shutdown()``), False when this process was already connected.
    """
    import ray

    if ray.is_initialized():
        return False
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=log_to_driver, configure_logging=False)
        return True
    address_file = os.environ.get(ADDRESS_FILE_ENV)
    address = wait_for_address(Path(address_file)) if address_file else None
    if address:
        ray.init(address=address, _node_ip_address="127.0.0.1", log_to_driver=log_to_driver,
                 configure_logging=False)
        return True
    ray.init(**start_options(num_cpus), log_to_driver=log_to_driver)
    keep_token_private()
    return True


def keep_token_private() -> None:
    """Ray writes the token file of a new local Ray with the process's umask (often world-readable);
    only this user needs it."""
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    try:
        if path.is_file() and path.stat().st_uid == os.getuid():
            path.chmod(0o600)
    except OSError as exc:  # a read-only home: say so, the run goes on
        log.warning("could not make Ray's token file private (%s): %s", path, exc)


def _warm() -> None:
    """Create what every Ray Train run asks for first and waits up to 5 s on: the autoscaling
    coordinator (a detached actor; Ray 2.60's trainers get or create it by this name)."""
    import ray

    try:
        from ray.data._internal.cluster_autoscaler.default_autoscaling_coordinator import (
            get_or_create_autoscaling_coordinator,
        )
    except ImportError:  # another Ray version: nothing to warm; training then waits as it would anyway
        return
    ray.get(get_or_create_autoscaling_coordinator().__ray_ready__.remote(), timeout=60)


def _serve(address_file: Path, num_cpus: int, parent: int) -> int:
    import ray

    stopping = []
    try:
        ray.init(**start_options(num_cpus), log_to_driver=False)
        keep_token_private()
        # After ray.init, which installs a handler of its own that dumps a stack trace on SIGTERM.
        signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
        _warm()
        answer = {"address": ray.get_runtime_context().gcs_address}
    except Exception as exc:  # noqa: BLE001 (said to the steps, which then start a Ray of their own)
        answer = {"error": f"{type(exc).__name__}: {exc}"}
    _write(address_file, answer)
    if "error" in answer:
        return 1
    while not stopping and os.getppid() == parent:
        time.sleep(0.5)
    ray.shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m components.learn.ray_runtime", description=__doc__.split("\n")[0])
    p.add_argument("--address-file", type=Path, required=True)
    p.add_argument("--cpus", type=int, default=0)
    p.add_argument("--parent", type=int, default=os.getppid())
    args = p.parse_args(argv)
    return _serve(args.address_file, args.cpus, args.parent)


if __name__ == "__main__":
    raise SystemExit(main())
