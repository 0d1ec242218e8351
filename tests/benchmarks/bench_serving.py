"""Model server benchmark (not a test): throughput and latency, with and without monitoring.

    .venv/bin/python -m pytest tests/benchmarks/bench_serving.py -m bench -s

Two servers score the same trained bundle, each in its own uvicorn process
(one worker):

* ``full``: ``servicetime serve`` (``components.serving.app``): strict request
  model, fallback bookkeeping, Prometheus metrics, drift window;
* ``minimal``: a bare FastAPI app defined below: the same body parsing and the
  same compiled scorer, and nothing else (no metrics, no drift, no fallback).

Both run at once and the load generator, a separate process (asyncio +
aiohttp), alternates between them (A B A B, ``BENCH_ROUNDS`` closed-loop rounds
of ``BENCH_ROUND_S`` seconds, fixed concurrency; the best round is the peak,
and the full/minimal ratio is the median over adjacent pairs of rounds), so
load from elsewhere on a shared machine hits both alike. Latency is then
measured open-loop at half of each server's peak, from each request's scheduled
send time (no coordinated omission); the best of ``BENCH_LATENCY_TRIALS`` trials
is reported with every trial's p99 and the machine's load average beside it.
The monitoring's own cost is also measured in process, without HTTP: the full
request path against parse + score + render, interleaved.

Figures go to stdout and to the "serving" section of the shared results file (``BENCH_OUT``; default:
``bench-results-serving.json`` in the temp directory).

Targets (reported, not asserted): single-stop p99 < 10 ms at half peak, batch
> 50,000 stops/s, <= 20% of throughput lost to monitoring.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi import FastAPI, Request, Response  # module level: the endpoint's annotations must resolve

from tests.serving.conftest import trained  # noqa: F401 (the session fixture: a real trained bundle)

DURATION_S = float(os.environ.get("BENCH_DURATION_S", "4"))  # each open-loop latency trial
BATCH = 1000
LATENCY_TRIALS = int(os.environ.get("BENCH_LATENCY_TRIALS", "3"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
ROUND_S = float(os.environ.get("BENCH_ROUND_S", "2"))
SINGLE_CONCURRENCY = 8
BATCH_CONCURRENCY = 2
TARGETS = {"single_p99_ms_at_half_peak": 10.0, "batch_stops_per_s": 50_000.0, "monitoring_loss": 0.20}
BUNDLE_ENV = "BENCH_MINIMAL_BUNDLE"


# --- the minimal server ------------------------------------------------------------------


def minimal_app():
    """A bare FastAPI app: parse, score with the bundle's predictor, answer. For ``uvicorn --factory``."""
    import torch

    from components.learn.bundle import Predictor
    from components.serving.api import request_model, to_columns
    from components.serving.http import render_predictions
    from components.serving.state import settle_heap

    torch.set_num_threads(1)
    predictor = Predictor.load(os.environ[BUNDLE_ENV])
    settle_heap()  # the same runtime tuning as the full server: only the monitoring differs
    model = request_model(BATCH)
    app = FastAPI()

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        stops = model.model_validate_json(await request.body()).stops
        cols = to_columns(stops)
        seconds, low, high = predictor.predict_interval(cols)
        return Response(render_predictions(seconds, np.ones(len(seconds), dtype=bool), predictor.version, low, high),
                        media_type="application/json")

    @app.get("/readyz")
    async def readyz() -> dict:
        return {"ready": True}

    return app


# --- the load generator (runs in its own process) ----------------------------------------


async def _closed_loop(url: str, body: bytes, concurrency: int, duration: float) -> dict:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + duration
    headers = {"content-type": "application/json"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def worker():
            nonlocal errors
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as r:
                    await r.read()
                    if r.status != 200:
                        errors += 1
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"requests": len(latencies), "errors": errors, "seconds": elapsed, "latencies": latencies}


async def _open_loop(url: str, body: bytes, rate: float, duration: float) -> dict:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    headers = {"content-type": "application/json"}
    n = int(rate * duration)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as session:

        async def one(scheduled: float):
            nonlocal errors
            async with session.post(url, data=body, headers=headers) as r:
                await r.read()
                if r.status != 200:
                    errors += 1
            latencies.append(time.perf_counter() - scheduled)  # from the planned send time

        # warm the connection pool
        await asyncio.gather(*(one(time.perf_counter()) for _ in range(8)))
        latencies.clear()
        start = time.perf_counter() + 0.05
        tasks = []
        for i in range(n):
            scheduled = start + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(scheduled)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    return {"requests": len(latencies), "errors": errors, "seconds": elapsed, "latencies": latencies,
            "offered_rate": rate}


def run_load(mode: str, url: str, body: bytes, concurrency: int = 8, rate: float = 0.0,
             duration: float = DURATION_S) -> dict:
    """Entry point of the load-generator process."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    if mode == "closed":
        out = asyncio.run(_closed_loop(url, body, concurrency, duration))
    else:
        out = asyncio.run(_open_loop(url, body, rate, duration))
    lat = np.asarray(out.pop("latencies")) * 1000
    out.update({
        "throughput_rps": out["requests"] / out["seconds"],
        "p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
        "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None,
        "mean_ms": float(lat.mean()) if len(lat) else None,
    })
    return out


# --- orchestration -------------------------------------------------------------------------


class ServerProcess:
    def __init__(self, cmd: list[str], port: int, env: dict[str, str], log: Path):
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self.proc = subprocess.Popen(cmd, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
                                     start_new_session=True)

    def __enter__(self):
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"server not ready: {self.log.read_text()[-2000:]}")

    def __exit__(self, *exc):
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


def _throughput(pool: ProcessPoolExecutor, urls: dict[str, str], single: bytes, batch: bytes) -> dict:
    """Closed-loop rounds, alternating the servers (A B A B ...) so that load from elsewhere hits both alike."""
    for url in urls.values():  # warm-up
        pool.submit(run_load, "closed", f"{url}/predict", single, SINGLE_CONCURRENCY, 0.0, 1.0).result()
        pool.submit(run_load, "closed", f"{url}/predict", batch, BATCH_CONCURRENCY, 0.0, 1.0).result()
    rounds: dict[str, dict[str, list[dict]]] = {name: {"single": [], "batch": []} for name in urls}
    for _ in range(ROUNDS):
        for name, url in urls.items():
            rounds[name]["single"].append(
                pool.submit(run_load, "closed", f"{url}/predict", single, SINGLE_CONCURRENCY, 0.0, ROUND_S).result())
            b = pool.submit(run_load, "closed", f"{url}/predict", batch, BATCH_CONCURRENCY, 0.0, ROUND_S).result()
            b["stops_per_s"] = b["throughput_rps"] * BATCH
            rounds[name]["batch"].append(b)
    out = {}
    for name, r in rounds.items():
        out[name] = {
            "single_peak": max(r["single"], key=lambda x: x["throughput_rps"]),
            "batch": max(r["batch"], key=lambda x: x["stops_per_s"]),
            "single_rps_rounds": [x["throughput_rps"] for x in r["single"]],
            "batch_stops_per_s_rounds": [x["stops_per_s"] for x in r["batch"]],
            "errors": sum(x["errors"] for kind in r.values() for x in kind),
        }
    return out


def _latency(pool: ProcessPoolExecutor, url: str, single: bytes, rate: float) -> dict:
    """Open loop at ``rate``; the best of a few trials, with every trial's p99 beside it."""
    trials = [pool.submit(run_load, "open", f"{url}/predict", single, 0, rate).result() for _ in range(LATENCY_TRIALS)]
    best = min(trials, key=lambda t: t["p99_ms"])
    best["p99_ms_all_trials"] = [t["p99_ms"] for t in trials]
    best["errors_all_trials"] = sum(t["errors"] for t in trials)
    return best


def _in_process_cost(bundle: Path, single: bytes, batch: bytes) -> dict:
    """The monitoring's own cost per request without HTTP or load noise: the full request path
    (parse, score with fallback bookkeeping, metrics, drift) against parse + score + render."""
    from components.serving.api import to_columns
    from components.serving.http import render_predictions
    from components.serving.settings import ServerSettings
    from components.serving.state import ServerState, settle_heap

    state = ServerState(ServerSettings(model_path=str(bundle)))
    state.holder.check()
    model = state.holder.current
    settle_heap()

    def full(body):
        stops = state.parse(body)
        return render_predictions(*state.score(stops))

    def minimal(body):
        stops = state.request_model.model_validate_json(body).stops
        cols = to_columns(stops)
        seconds, low, high = model.predictor.predict_interval(cols)
        return render_predictions(seconds, np.ones(len(seconds), dtype=bool), model.version, low, high)

    out = {}
    for name, body, n in (("single", single, 2000), ("batch", batch, 40)):
        timings: dict[str, list[float]] = {"full": [], "minimal": []}
        for _ in range(n):  # interleaved, so drift in machine load hits both
            for label, fn in (("full", full), ("minimal", minimal)):
                started = time.perf_counter()
                fn(body)
                timings[label].append(time.perf_counter() - started)
        f, mn = np.median(timings["full"]) * 1e6, np.median(timings["minimal"]) * 1e6
        out[name] = {"full_us": f, "minimal_us": mn, "monitoring_us": f - mn, "monitoring_share": (f - mn) / f}
    return out


def _paired_ratio(a: list[float], b: list[float]) -> float:
    return float(np.median([x / y for x, y in zip(a, b, strict=True)]))


@pytest.mark.bench
def test_bench_serving(trained, tmp_path):  # noqa: F811
    from components.devstack.process import free_port

    stops = trained.stops(BATCH)
    single = json.dumps({"stops": stops[:1]}).encode()
    batch = json.dumps({"stops": stops}).encode()
    env = {k: v for k, v in os.environ.items() if k not in ("PROMETHEUS_MULTIPROC_DIR",)}
    results: dict = {
        "cpus": os.cpu_count(),
        "load_average_before": os.getloadavg(),
        "duration_s": DURATION_S,
        "batch_size": BATCH,
        "single_concurrency": SINGLE_CONCURRENCY,
        "batch_concurrency": BATCH_CONCURRENCY,
        "server_workers": 1,
        "targets": TARGETS,
    }
    results["in_process"] = _in_process_cost(trained.bundle, single, batch)
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        full_port, minimal_port = free_port(), free_port()
        # BENCH_PREDICTION_LOG=0: the full server without its prediction log, to see what the log costs.
        no_log = ["--set", "monitor.log_predictions=false"] if os.environ.get("BENCH_PREDICTION_LOG") == "0" else []
        # BENCH_FOLLOW_HISTORY=0: answer with the bundle's customer history instead of following the store's.
        if os.environ.get("BENCH_FOLLOW_HISTORY") == "0":
            no_log += ["--set", "serve.follow_history=false"]
        full_cmd = [sys.executable, "-m", "components.serving", "--workspace", str(trained.workspace), *no_log, "serve",
                    "--port", str(full_port), "--model-path", str(trained.bundle), "--workers", "1"]
        minimal_cmd = [sys.executable, "-m", "uvicorn", "--factory", "tests.benchmarks.bench_serving:minimal_app",
                       "--port", str(minimal_port), "--log-level", "warning", "--no-access-log"]
        with ServerProcess(full_cmd, full_port, env, tmp_path / "full.log") as full_server, \
                ServerProcess(minimal_cmd, minimal_port, {**env, BUNDLE_ENV: str(trained.bundle)},
                              tmp_path / "minimal.log") as minimal_server:
            urls = {"full": full_server.url, "minimal": minimal_server.url}
            results.update(_throughput(pool, urls, single, batch))
            for name, url in urls.items():
                results[name]["single_half_peak"] = _latency(pool, url, single,
                                                             results[name]["single_peak"]["throughput_rps"] / 2)
            results["full"]["metrics_bytes"] = len(httpx.get(f"{full_server.url}/metrics").text)
    results["load_average_after"] = os.getloadavg()
    full, minimal = results["full"], results["minimal"]
    summary = {
        "single_peak_rps": full["single_peak"]["throughput_rps"],
        "single_p50_ms_at_half_peak": full["single_half_peak"]["p50_ms"],
        "single_p99_ms_at_half_peak": full["single_half_peak"]["p99_ms"],
        "batch_stops_per_s": full["batch"]["stops_per_s"],
        "batch_p50_ms": full["batch"]["p50_ms"],
        "batch_p99_ms": full["batch"]["p99_ms"],
        "minimal_single_peak_rps": minimal["single_peak"]["throughput_rps"],
        "minimal_single_p99_ms_at_half_peak": minimal["single_half_peak"]["p99_ms"],
        "minimal_batch_stops_per_s": minimal["batch"]["stops_per_s"],
        # Median over adjacent (A, B) rounds of full/minimal: pairs share the machine's load of the moment.
        "single_throughput_ratio_full_vs_minimal": _paired_ratio(
            full["single_rps_rounds"], minimal["single_rps_rounds"]
        ),
        "batch_throughput_ratio_full_vs_minimal": _paired_ratio(
            full["batch_stops_per_s_rounds"], minimal["batch_stops_per_s_rounds"]
        ),
        "errors": sum(side["errors"] + side["single_half_peak"]["errors_all_trials"] for side in (full, minimal)),
        "in_process_monitoring_us_single": results["in_process"]["single"]["monitoring_us"],
        "in_process_monitoring_share_single": results["in_process"]["single"]["monitoring_share"],
        "in_process_monitoring_us_batch": results["in_process"]["batch"]["monitoring_us"],
        "in_process_monitoring_share_batch": results["in_process"]["batch"]["monitoring_share"],
    }
    summary["single_monitoring_loss"] = 1 - summary["single_throughput_ratio_full_vs_minimal"]
    summary["batch_monitoring_loss"] = 1 - summary["batch_throughput_ratio_full_vs_minimal"]
    summary["meets"] = {
        "single_p99_ms_at_half_peak": summary["single_p99_ms_at_half_peak"] < TARGETS["single_p99_ms_at_half_peak"],
        "batch_stops_per_s": summary["batch_stops_per_s"] > TARGETS["batch_stops_per_s"],
        "monitoring_loss": max(summary["single_monitoring_loss"], summary["batch_monitoring_loss"])
        <= TARGETS["monitoring_loss"],
    }
    results["summary"] = summary
    from tests.benchmarks.results import record

    out = record("serving", results)  # shares the results file with the other benchmarks

    print("\nmodel server benchmark (%d CPUs, 1 uvicorn worker, load generator in another process)" % os.cpu_count())
    print(
        f"  single stop, peak:          {summary['single_peak_rps']:8.0f} req/s   "
        f"(minimal app {summary['minimal_single_peak_rps']:.0f})"
    )
    print(
        f"  single stop at half peak:   p50 {summary['single_p50_ms_at_half_peak']:.2f} ms, "
        f"p99 {summary['single_p99_ms_at_half_peak']:.2f} ms"
        f"   (minimal app p99 {summary['minimal_single_p99_ms_at_half_peak']:.2f} ms)"
    )
    print(
        f"  batch of {BATCH}:             {summary['batch_stops_per_s']:8.0f} stops/s "
        f"(p50 {summary['batch_p50_ms']:.1f} ms, "
        f"p99 {summary['batch_p99_ms']:.1f} ms; minimal app {summary['minimal_batch_stops_per_s']:.0f})"
    )
    print(f"  throughput full/minimal:    single {summary['single_throughput_ratio_full_vs_minimal']:.3f}, "
          f"batch {summary['batch_throughput_ratio_full_vs_minimal']:.3f}  "
          f"(lost to monitoring: {summary['single_monitoring_loss']:.1%} / {summary['batch_monitoring_loss']:.1%})")
    print(
        f"  in process (no HTTP):       monitoring costs {summary['in_process_monitoring_us_single']:.0f} us of a "
        f"{results['in_process']['single']['full_us']:.0f} us single-stop request "
        f"({summary['in_process_monitoring_share_single']:.1%}), "
        f"{summary['in_process_monitoring_us_batch']:.0f} us of a "
        f"{results['in_process']['batch']['full_us'] / 1000:.1f} ms batch "
        f"({summary['in_process_monitoring_share_batch']:.1%})"
    )
    print(f"  p99 at half peak, all trials: {full['single_half_peak']['p99_ms_all_trials']} ms; "
          f"load average before/after: {results['load_average_before'][0]:.2f}/{results['load_average_after'][0]:.2f}")
    print(f"  targets met: {summary['meets']}; errors: {summary['errors']}")
    print(f"  results: {out}")
    assert summary["errors"] == 0
