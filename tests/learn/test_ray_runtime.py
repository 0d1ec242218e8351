"""A run's shared local Ray: steps attach to it, it goes with the run, and a step whose run has none
(or whose helper failed) starts a Ray of its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import psutil
import pytest

from components.learn import ray_runtime

ATTACH = ("from components.learn.ray_runtime import connect; import ray; connect(2); "
          "import json; print(json.dumps({'cpus': ray.cluster_resources().get('CPU'), "
          "'gcs': ray.get_runtime_context().gcs_address}))")


def test_the_address_is_read_once_written_and_a_failed_helper_is_said(tmp_path):
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps({"address": "127.0.0.1:6379"}))
    bad.write_text(json.dumps({"error": "RuntimeError: no space"}))
    assert ray_runtime.wait_for_address(good, timeout_s=1) == "127.0.0.1:6379"
    assert ray_runtime.wait_for_address(bad, timeout_s=1) is None  # the step starts its own
    started = time.monotonic()
    assert ray_runtime.wait_for_address(tmp_path / "never.json", timeout_s=0.5) is None
    assert time.monotonic() - started < 5
    # A helper that died before Ray came up: the step does not wait out the timeout.
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    pending = tmp_path / "pending.json"
    pending.write_text(json.dumps({"pending": gone.pid}))
    started = time.monotonic()
    assert ray_runtime.wait_for_address(pending, timeout_s=60) is None
    assert time.monotonic() - started < 5


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@pytest.mark.slow
def test_steps_attach_to_the_runs_ray_and_it_goes_with_the_helper(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv(ray_runtime.ADDRESS_FILE_ENV, raising=False)
    monkeypatch.delenv(ray_runtime.AUTH_MODE_ENV, raising=False)
    address_file = tmp_path / "ray" / "address.json"
    helper = ray_runtime.start_helper(address_file, 2)
    try:
        # What start_helper hands to the steps it starts afterwards.
        assert os.environ[ray_runtime.ADDRESS_FILE_ENV] == str(address_file)
        assert os.environ[ray_runtime.AUTH_MODE_ENV] == "token"
        steps = [subprocess.run([sys.executable, "-c", ATTACH], capture_output=True, text=True, timeout=180)
                 for _ in range(2)]
        for step in steps:
            assert step.returncode == 0, step.stderr[-2000:]
        answers = [json.loads(s.stdout.strip().splitlines()[-1]) for s in steps]
        shared = json.loads(address_file.read_text())["address"]
        assert [a["gcs"] for a in answers] == [shared, shared]  # both steps on the one Ray, none of their own
        assert answers[0]["cpus"] == 2
        ray_processes = _descendants(helper.pid)
        assert any("raylet" in p.name() for p in ray_processes)
    finally:
        ray_runtime.stop_helper(helper)
    assert helper.returncode == 0
    assert not address_file.exists() and ray_runtime.ADDRESS_FILE_ENV not in os.environ
    deadline = time.monotonic() + 20
    while any(map(_alive, ray_processes)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p.pid for p in ray_processes if _alive(p)]


@pytest.mark.slow
def test_a_step_starts_its_own_ray_when_the_runs_did_not_come_up(tmp_path):
    address_file = tmp_path / "address.json"
    address_file.write_text(json.dumps({"error": "RuntimeError: the helper could not start Ray"}))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env[ray_runtime.ADDRESS_FILE_ENV] = str(address_file)
    step = subprocess.run([sys.executable, "-c", ATTACH], capture_output=True, text=True, timeout=180, env=env)
    assert step.returncode == 0, step.stderr[-2000:]
    assert "the run's shared Ray did not start" in step.stderr
    assert json.loads(step.stdout.strip().splitlines()[-1])["cpus"] >= 2
