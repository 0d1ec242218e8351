"""`stack status` asks each service itself: a server whose launcher died is still healthy, and a
recorded launcher that lives on while its server does not answer is not."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading

from components.devstack import services as service_procs
from components.devstack import stack
from components.devstack.process import free_port
from tests.conftest import tiny_config


class _Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args):
        pass


def test_status_reads_health_not_the_launcher_pid(tmp_path):
    cfg = tiny_config(tmp_path / "ws")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    url = f"http://127.0.0.1:{server.server_address[1]}"
    silent = f"http://127.0.0.1:{free_port()}"
    try:
        state = {"services": {
            "mlflow": {"pid": dead.pid, "start_ticks": None, "url": url, "health": f"{url}/health", "log": "-"},
            "prometheus": {"pid": alive.pid, "start_ticks": service_procs.start_ticks(alive.pid), "url": silent,
                           "health": f"{silent}/-/ready", "log": "-"}}}
        stack.state_path(cfg).parent.mkdir(parents=True)
        stack.state_path(cfg).write_text(json.dumps(state))
        report = stack.status(cfg)["services"]
        assert report["mlflow"]["healthy"] and report["mlflow"]["running"] and not report["mlflow"]["launcher_alive"]
        assert not report["prometheus"]["healthy"]
        text = stack.render_status(stack.status(cfg))
        assert "launcher pid gone" in text and "running, unhealthy" in text
    finally:
        alive.kill()
        alive.wait()
        server.shutdown()
