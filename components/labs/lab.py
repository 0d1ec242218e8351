"""``make lab``: JupyterLab on ``notebooks/`` with the ``servicetime`` kernel, its URL (token included) printed.

The server listens on loopback unless told otherwise (a remote machine is reached through
``ssh -L``), never opens a browser, and reads no input, so Ctrl-C or SIGTERM stops it at
once. The token is generated here and handed over in the environment (``JUPYTER_TOKEN``),
not on the command line where ``ps`` would show it. Once the server answers, the kernel
spec ``servicetime`` is looked up through the REST API: a lab without its kernel says so
instead of starting. ``--exit-after-start`` stops the server right after that check (tests,
a setup script).
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

KERNEL = "servicetime"


def command(ip: str, port: int, root: Path, jupyter: str = sys.executable) -> list[str]:
    """JupyterLab's command line; ``jupyter`` is the Python of the venv that has JupyterLab."""
    cmd = [jupyter, "-m", "jupyterlab", "--no-browser", f"--ip={ip}", f"--port={port}",
           "--ServerApp.port_retries=0",  # the printed URL is the port asked for, or it fails
           f"--ServerApp.root_dir={root}"]
    if os.geteuid() == 0:  # a container or a cloud VM's root shell: JupyterLab refuses root without it
        cmd.append("--allow-root")
    return cmd


def wait_ready(base: str, token: str, proc: subprocess.Popen, timeout_s: float) -> dict:
    """Poll /api/kernelspecs until the server answers; returns the kernel specs it lists."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with {proc.returncode} before answering")
        try:
            answer = httpx.get(f"{base}/api/kernelspecs", headers={"Authorization": f"token {token}"}, timeout=2)
            if answer.status_code == 200:
                return answer.json()
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(0.3)
    raise TimeoutError(f"JupyterLab did not answer at {base} within {timeout_s:.0f} s")


def stop(proc: subprocess.Popen, timeout_s: float = 15.0) -> int:
    """SIGTERM (the server shuts its kernels down), SIGKILL if it does not go."""
    if proc.poll() is None:
        proc.terminate()
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="make lab", description=__doc__.split("\n")[0])
    p.add_argument("--ip", default=os.environ.get("LAB_IP", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("LAB_PORT", "8888")))
    p.add_argument("--notebooks", type=Path, default=Path("notebooks"))
    p.add_argument("--jupyter", default=sys.executable, help="the Python that runs JupyterLab (make lab: .venv-lab's)")
    p.add_argument("--exit-after-start", action="store_true", help="stop once the server and the kernel answer")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the server")
    args = p.parse_args(argv)

    token = os.environ.get("JUPYTER_TOKEN") or secrets.token_hex(24)
    root = args.notebooks.resolve()
    proc = subprocess.Popen(command(args.ip, args.port, root, args.jupyter), env={**os.environ, "JUPYTER_TOKEN": token},
                            stdin=subprocess.DEVNULL)
    # SIGTERM to this launcher stops the server the same way Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    host = "127.0.0.1" if args.ip in ("0.0.0.0", "::", "") else args.ip
    base = f"http://{host}:{args.port}"
    try:
        specs = wait_ready(base, token, proc, args.timeout)
        if KERNEL not in specs.get("kernelspecs", {}):
            print(f"error: no '{KERNEL}' kernel in {sorted(specs.get('kernelspecs', {}))}; "
                  f"register it: {sys.executable} -m ipykernel install --sys-prefix --name {KERNEL}", file=sys.stderr)
            return 2
        print(f"\nJupyterLab on {root} with the '{KERNEL}' kernel:\n    {base}/lab?token={token}\n", flush=True)
        if args.ip == "127.0.0.1":
            print(f"    from your machine: ssh -L {args.port}:127.0.0.1:{args.port} <this host>, then the URL above",
                  flush=True)
        if args.exit_after_start:
            return 0
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    except (RuntimeError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        stop(proc)


if __name__ == "__main__":
    sys.exit(main())
