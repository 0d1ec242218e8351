"""Serving frameworks benchmark (not a test): our model server against a minimal FastAPI app and Ray Serve.

    .venv/bin/python -m pytest tests/benchmarks/bench_frameworks.py -m bench -s -p no:cacheprovider

One model bundle (trained in-process on the default data, see ``bench_data.default_features``),
three servers, each started as its own process group on loopback and stopped at the end:

* ``ours``: ``servicetime serve --model-path <bundle>`` (or ``python -m components.serving serve``
  while the main CLI lacks the subcommand): strict request model, the column transform,
  fallback, Prometheus metrics, drift window; one uvicorn worker;
* ``minimal``: the FastAPI app a user writes first (``minimal_app`` below): JSON -> DataFrame
  -> ``components.learn.bundle.Predictor.predict`` -> JSON; one uvicorn worker;
* ``ray-serve``: Ray Serve 2.60 with one replica running the same code as ``minimal``
  (``RayServePredictor`` below), default settings, its own local Ray (2 CPUs);
* ``ray-serve+scorer``: the same Ray Serve, but the replica runs our server's scoring path
  (request model, the column transform, response rendering; no metrics): what the framework
  itself costs once the model code is as fast as ours.

Every server answers with one torch thread. The load comes from one separate process
(asyncio + aiohttp, closed loop): N concurrent clients send requests back to back for a
fixed time, each request's latency measured. Single stops with 8 clients, batches of
200 stops with 4 clients. Figures: throughput (requests/s and stops/s), p50 and p99
latency, with ratios against the minimal app and against Ray Serve. Before the load,
every server's answer for the same 200 stops is checked against ``Predictor.predict``.

Goal (printed, not asserted): our server >= 1.5x Ray Serve's throughput at equal or better p99
(against both Ray Serve variants).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pytest
from fastapi import FastAPI, Request  # module level: the endpoint's annotation must resolve (postponed annotations)

from tests.benchmarks.results import goal, print_table, ratio, record

DURATION_S = float(os.environ.get("BENCH_FRAMEWORKS_DURATION_S", "5"))
WARMUP_S = 1.0
BATCH = 200
LOADS = {"single": (1, 8), "batch": (BATCH, 4)}  # kind: (stops per request, concurrent clients)
GOAL_THROUGHPUT = 1.5
BUNDLE_ENV = "BENCH_FRAMEWORKS_BUNDLE"
REPO = Path(__file__).resolve().parents[2]


# --- the same model code for the minimal app and Ray Serve ------------------------------------


def stops_frame(stops: list[dict]):
    import pandas as pd

    frame = pd.DataFrame(stops)
    frame["delivered_at"] = pd.to_datetime(frame["delivered_at"], utc=True)
    return frame


def answer(predictor, stops: list[dict]) -> dict:
    seconds, low, high = predictor.predict_interval(stops_frame(stops))
    return {
        "predictions": [
            {
                "service_time_s": round(float(s), 3),
                "low_s": round(float(a), 3),
                "high_s": round(float(b), 3),
                "source": "model",
            }
            for s, a, b in zip(seconds, low, high, strict=True)
        ],
        "model_version": predictor.version,
    }


def load_predictor(bundle: str):
    import torch

    from components.learn.bundle import Predictor

    torch.set_num_threads(1)
    return Predictor.load(bundle)


def minimal_app():
    """The FastAPI app a user writes first; for ``uvicorn --factory``."""
    predictor = load_predictor(os.environ[BUNDLE_ENV])
    app = FastAPI()

    @app.post("/predict")
    async def predict(request: Request) -> dict:
        return answer(predictor, (await request.json())["stops"])

    @app.get("/readyz")
    async def readyz() -> dict:
        return {"ready": True}

    return app


class RayServePredictor:
    """Ray Serve deployment body: the minimal app's code, or (``scorer=True``) our server's scoring path
    (the same request model, the predictor's column path and response rendering, without metrics), behind Serve's
    proxy and router."""

    def __init__(self, bundle: str, scorer: bool = False):
        self.predictor = load_predictor(bundle)
        self.scorer = None
        if scorer:
            from components.serving.api import request_model
            self.scorer, self.request_model = self.predictor, request_model(1000)

    async def __call__(self, request):
        from starlette.responses import Response

        if request.url.path.rstrip("/").endswith("readyz"):
            return {"ready": True}
        if self.scorer is None:
            return answer(self.predictor, (await request.json())["stops"])
        from components.serving.api import to_columns
        from components.serving.http import render_predictions

        stops = self.request_model.model_validate_json(await request.body()).stops
        cols = to_columns(stops)
        seconds, low, high = self.scorer.predict_interval(cols)
        return Response(
            render_predictions(seconds, np.ones(len(seconds), dtype=bool), self.predictor.version, low, high),
            media_type="application/json",
        )


def serve_with_ray(port: int, bundle: str, scorer: bool = False) -> None:
    """Entry point of the Ray Serve process: a local Ray, Serve on 127.0.0.1:port, until SIGTERM."""
    import ray
    from ray import serve

    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(serve.deployment(RayServePredictor, name="servicetime", num_replicas=1,
                                   ray_actor_options={"num_cpus": 1}).bind(bundle, scorer),
                  name="servicetime", route_prefix="/")
        print("ray serve ready", flush=True)
        stopping: list[int] = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, frame: stopping.append(signum))
        while not stopping:
            time.sleep(0.2)
    finally:
        with contextlib.suppress(Exception):
            serve.shutdown()
        ray.shutdown()


# --- the load generator (its own process) -----------------------------------------------------


async def _closed_loop(url: str, body: bytes, clients: int, duration: float) -> dict:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    headers = {"content-type": "application/json"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:

        async def client(deadline: float, keep: bool):
            nonlocal errors
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as r:
                    await r.read()
                    ok = r.status == 200
                if keep:
                    latencies.append(time.perf_counter() - started)
                    errors += not ok

        warm = time.perf_counter() + WARMUP_S
        await asyncio.gather(*(client(warm, False) for _ in range(clients)))
        started = time.perf_counter()
        await asyncio.gather(*(client(started + duration, True) for _ in range(clients)))
        elapsed = time.perf_counter() - started
    lat = np.asarray(latencies) * 1000
    return {"requests": len(lat), "errors": errors, "seconds": elapsed, "throughput_rps": len(lat) / elapsed,
            "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
            "mean_ms": float(lat.mean()), "clients": clients}


def run_load(url: str, body: bytes, clients: int, duration: float) -> dict:
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    return asyncio.run(_closed_loop(url, body, clients, duration))


# --- servers as process groups -----------------------------------------------------------------


class Server:
    def __init__(self, name: str, cmd: list[str], port: int, env: dict[str, str], log: Path):
        self.name, self.url, self.log = name, f"http://127.0.0.1:{port}", log
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=open(log, "wb"),  # noqa: SIM115
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.ready_s: float | None = None

    def wait_ready(self, timeout: float = 180.0) -> Server:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}): {self.log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    self.ready_s = time.perf_counter() - self.started
                    return self
            time.sleep(0.25)
        raise TimeoutError(f"{self.name} not ready after {timeout:.0f} s: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        """SIGTERM to the server (it shuts down what it started), then SIGKILL to anything left in its group."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError):  # whatever the group left behind
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)


def ours_command(workspace: Path, port: int, bundle: Path) -> list[str]:
    """``servicetime serve`` when the main CLI has it, else the serving package's own entry point."""
    cli = Path(sys.executable).with_name("servicetime")
    args = ["serve", "--host", "127.0.0.1", "--port", str(port), "--model-path", str(bundle), "--workers", "1"]
    if cli.exists() and subprocess.run([str(cli), "serve", "--help"], capture_output=True, cwd=REPO).returncode == 0:
        return [str(cli), "--workspace", str(workspace), *args]
    return [sys.executable, "-m", "components.serving", "--workspace", str(workspace), *args]


def train_bundle(out: Path) -> Path:
    """A small model on the default data (in-process, 3 epochs), saved as the pipeline's bundle."""
    import pandas as pd
    import torch

    from components.core.config import TrainConfig
    from components.data.drift import Reference
    from components.learn.bundle import save_bundle
    from components.learn.train import train_in_process
    from tests.benchmarks.bench_data import default_features

    feats = default_features()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train_in_process(feats.train, feats.val, feats.net(), TrainConfig(num_workers=0, epochs=3))
    finally:
        torch.set_num_threads(threads)
    return save_bundle(out, result.state_dict, result.net, feats.transform,
                       pd.read_parquet(feats.dir / "customer_history.parquet"),
                       Reference.from_dict(json.loads((feats.dir / "reference.json").read_text())),
                       {"model_version": "bench", "best_val_mae_s": result.best_val_mae})


def _free_port() -> int:
    from components.devstack.process import free_port

    return free_port()


@pytest.mark.bench
def test_bench_frameworks():
    import httpx

    from components.learn.bundle import Predictor
    from components.serving.api import FIELD_NAMES
    from tests.benchmarks.bench_data import default_features

    wall = time.perf_counter()
    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="servicetime-bench-frameworks-"))
    bundle = train_bundle(tmp / "bundle")
    test = default_features().test
    stops = json.loads(test[list(FIELD_NAMES)].iloc[:BATCH].to_json(orient="records", date_format="iso"))
    bodies = {kind: json.dumps({"stops": stops[:n]}).encode() for kind, (n, _) in LOADS.items()}
    expected = Predictor.load(bundle).predict(stops_frame(stops))

    env = {k: v for k, v in os.environ.items() if k not in ("PROMETHEUS_MULTIPROC_DIR", "MLFLOW_TRACKING_URI")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    minimal = [sys.executable, "-m", "uvicorn", "--factory", "tests.benchmarks.bench_frameworks:minimal_app",
               "--host", "127.0.0.1", "--log-level", "warning", "--no-access-log"]
    ray = [sys.executable, "-m", "tests.benchmarks.bench_frameworks", "ray-serve", "--bundle", str(bundle)]
    specs = {
        "ours": lambda port: ours_command(tmp / "ws", port, bundle),
        "minimal": lambda port: [*minimal, "--port", str(port)],
        "ray-serve": lambda port: [*ray, "--port", str(port)],
        "ray-serve+scorer": lambda port: [*ray, "--port", str(port), "--scorer"],
    }
    results: dict[str, dict] = {}
    servers: list[Server] = []
    try:
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
            for name, command in specs.items():
                port = _free_port()
                server = Server(name, command(port), port, {**env, BUNDLE_ENV: str(bundle)}, tmp / f"{name}.log")
                servers.append(server)
                server.wait_ready()
                got = httpx.post(f"{server.url}/predict", content=bodies["batch"],
                                 headers={"content-type": "application/json"}, timeout=60)
                assert got.status_code == 200, f"{name}: {got.status_code} {got.text[:2000]}"
                seconds = np.array([p["service_time_s"] for p in got.json()["predictions"]])
                assert np.allclose(seconds, expected, atol=0.01), f"{name} disagrees with Predictor.predict"
                results[name] = {"ready_s": server.ready_s, "command": " ".join(command(port)[:4]) + " ..."}
                for kind, (n, clients) in LOADS.items():
                    out = pool.submit(run_load, f"{server.url}/predict", bodies[kind], clients, DURATION_S).result()
                    out["stops_per_s"] = out["throughput_rps"] * n
                    results[name][kind] = out
                server.stop()
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    rows = []
    for kind, (n, clients) in LOADS.items():
        for name in specs:
            r = results[name][kind]
            rows.append(
                {
                    "load": f"{kind} ({n} stop{'s' if n > 1 else ''}, {clients} clients)",
                    "server": name,
                    "req/s": r["throughput_rps"],
                    "stops/s": r["stops_per_s"],
                    "p50 ms": r["p50_ms"],
                    "p99 ms": r["p99_ms"],
                    "errors": r["errors"],
                    "throughput vs minimal": ratio(r["throughput_rps"], results["minimal"][kind]["throughput_rps"]),
                    "throughput vs ray-serve": ratio(r["throughput_rps"], results["ray-serve"][kind]["throughput_rps"]),
                    "p99 vs minimal": ratio(r["p99_ms"], results["minimal"][kind]["p99_ms"]),
                    "p99 vs ray-serve": ratio(r["p99_ms"], results["ray-serve"][kind]["p99_ms"]),
                    "throughput vs ray-serve+scorer": ratio(
                        r["throughput_rps"], results["ray-serve+scorer"][kind]["throughput_rps"]
                    ),
                    "p99 vs ray-serve+scorer": ratio(r["p99_ms"], results["ray-serve+scorer"][kind]["p99_ms"]),
                }
            )
    print_table(f"frameworks: one bundle, one uvicorn worker / one Serve replica, load generator in its own process, "
                f"{DURATION_S:.0f} s per run", rows)
    print("start-up to ready: " + ", ".join(f"{name} {results[name]['ready_s']:.1f} s" for name in specs))
    goals = []
    for framework in ("ray-serve", "ray-serve+scorer"):
        for kind in LOADS:
            ours, other = results["ours"][kind], results[framework][kind]
            x = ratio(ours["throughput_rps"], other["throughput_rps"])
            goals.append(
                goal(
                    f"{kind}: our server >= {GOAL_THROUGHPUT}x {framework}'s throughput at equal or better p99",
                    x >= GOAL_THROUGHPUT and ours["p99_ms"] <= other["p99_ms"],
                    f"{x:.2f}x throughput, p99 {ours['p99_ms']:.1f} vs {other['p99_ms']:.1f} ms",
                )
            )
    record("frameworks", {"servers": results, "rows": rows, "goals": goals, "batch": BATCH, "loads": LOADS,
                          "duration_s": DURATION_S, "load_average_before": load_before,
                          "wall_s": time.perf_counter() - wall})
    print(f"frameworks benchmark wall time {time.perf_counter() - wall:.1f} s")
    assert all(results[name][kind]["errors"] == 0 for name in specs for kind in LOADS)


def _main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="helper processes of the frameworks benchmark")
    sub = p.add_subparsers(dest="command", required=True)
    rs = sub.add_parser("ray-serve", help="serve a bundle with Ray Serve until SIGTERM")
    rs.add_argument("--port", type=int, required=True)
    rs.add_argument("--bundle", required=True)
    rs.add_argument("--scorer", action="store_true", help="score with our server's path (the column transform)")
    args = p.parse_args(argv)
    if args.command == "ray-serve":
        serve_with_ray(args.port, args.bundle, args.scorer)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
