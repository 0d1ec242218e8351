"""Run the pipeline on the embedded default: KFP's local SubprocessRunner, no Kubernetes, no Docker.

The run executes in a child process of its own session, so its steps and the
local Ray they start form one group that ends with the run: on SIGTERM/SIGINT
the parent stops the group; if the parent is killed outright, a watchdog in the
child notices and stops it. Every process of a run carries ``SERVICETIME_RUN_TOKEN``
in its environment (Ray's processes too, which may leave the group), and stray
ones are found by it. KFP's and Ray's output goes to a log file; the terminal
gets one line per step (``pipelines.progress``).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from components.core.config import Config
from components.core.storage import ServiceUnavailable, Storage, StorageError, join
from components.steps.summary import summarize
from pipelines.progress import Progress

log = logging.getLogger(__name__)
RUN_TOKEN = "SERVICETIME_RUN_TOKEN"
STOP_GRACE_S = 3.0


def execute(cfg: Config, data_root: str, run_uri: str, last_weeks: int = 0, fail_on_rejected: bool = True,
            simulate_if_empty: bool = False, tune_trials: int = 0) -> None:
    """The pipeline in this process (the child's work)."""
    import warnings

    from kfp import local

    from pipelines.parameters import config_json_for, knob_values
    from pipelines.pipeline import servicetime_pipeline

    # Intended: the SubprocessRunner runs our image's components in this very environment.
    warnings.filterwarnings("ignore", message="You may be attemping to run a task", category=RuntimeWarning)
    pipeline_root = Path(cfg.workspace).resolve() / "kfp"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root), raise_on_error=False)
    servicetime_pipeline(
        data_root=data_root, run_uri=run_uri, config_json=config_json_for(cfg), last_weeks=last_weeks,
        fail_on_rejected=fail_on_rejected, simulate_if_empty=simulate_if_empty, tune_trials=tune_trials,
        **knob_values(cfg))


def marked(token: str) -> list[int]:
    """Pids (other than this one) whose environment carries the run's token."""
    from components.devstack.process import pids_with_env

    return pids_with_env(RUN_TOKEN, token)


def stop_marked(token: str, grace_s: float = STOP_GRACE_S) -> list[int]:
    """SIGTERM every process of the run, SIGKILL what is left after ``grace_s``; returns the pids."""
    pids = marked(token)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while sig == signal.SIGTERM and time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.1)
    return pids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _watch_parent(parent: int, token: str, spec_path: str) -> None:
    """In the child: when the parent is gone (killed), stop the whole run and exit; a process outside
    the run then ends the MLflow runs its steps could not end (KILLED, not RUNNING). Importing MLflow
    here instead would cost every run seconds at its start, for a parent that is rarely killed."""
    while os.getppid() == parent:
        time.sleep(0.5)
    stop_marked(token, grace_s=1.0)
    env = {k: v for k, v in os.environ.items() if k != RUN_TOKEN}  # not one of the run's processes
    subprocess.Popen([sys.executable, "-m", "pipelines.local", "--end-orphans", spec_path, token], env=env,
                     start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL)
    os._exit(137)


def _end_orphans_of(spec_path: str, token: str) -> int:
    """``--end-orphans``: end a killed run's MLflow runs left RUNNING, then remove its spec file."""
    from components.core.config import config_from_json
    from components.core.logs import configure

    configure()
    try:
        _end_orphans(config_from_json(json.loads(Path(spec_path).read_text())["config"]), token)
    finally:
        Path(spec_path).unlink(missing_ok=True)
    return 0


def run_local(
    cfg: Config,
    data_root: str,
    run_uri: str,
    last_weeks: int = 0,
    fail_on_rejected: bool = True,
    simulate_if_empty: bool = False,
    log_path: str | Path | None = None,
    echo: Callable[[str, bool], None] | None = None,
    verbose: bool = False,
    tune_trials: int = 0,
) -> dict:
    """Execute ``servicetime_pipeline`` locally in a child process; return the run summary (also on failure).

    Before any step: the services the run uses answer (else ``ServiceUnavailable`` naming one), and
    MLflow's store exists (a fresh workspace's SQLite is migrated here, once, not by racing steps).
    After the run: its MLflow runs still RUNNING (a step killed outright) end KILLED.
    """
    from components.learn import tracking
    from components.steps import check_services

    check_services(tracking.tracking_uri(cfg), (data_root, run_uri))
    tracking.setup(cfg)
    _end_dead_runs(cfg)
    token = os.environ.get(RUN_TOKEN) or uuid.uuid4().hex
    log_path = Path(log_path or Path(cfg.workspace) / "logs" / f"run-{time.strftime('%Y%m%d-%H%M%S')}.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    storage = Storage()
    echo = echo or _print
    progress = Progress(echo, time.perf_counter, lambda step: _record(storage, run_uri, step), cfg.train.epochs,
                        tty=sys.stdout.isatty())
    spec = {"config": cfg.model_dump_json(), "data_root": data_root, "run_uri": run_uri, "last_weeks": last_weeks,
            "fail_on_rejected": fail_on_rejected, "simulate_if_empty": simulate_if_empty, "tune_trials": tune_trials,
            "parent": os.getpid()}
    started = time.perf_counter()
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(spec, fh)
    env = {**os.environ, RUN_TOKEN: token, "PYTHONUNBUFFERED": "1"}
    child = subprocess.Popen([sys.executable, "-m", "pipelines.local", "--child", fh.name], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)

    def stop(signum, frame):
        echo(f"  stopping the run (signal {signum})", False)
        stop_marked(token)
        raise SystemExit(128 + signum)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        with log_path.open("w") as out:
            for line in child.stdout:
                out.write(line)
                progress.feed(line)
                if verbose:
                    echo(line.rstrip("\n"), False)
        child.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        Path(fh.name).unlink(missing_ok=True)
        stop_marked(token)  # whatever of the run outlived it (a Ray worker slow to exit)
    summary_uri = join(run_uri, "summary.json")
    try:
        summary = storage.read_json(summary_uri) if storage.exists(summary_uri) else None
    except StorageError as exc:  # S3 went away with the run's records
        log.warning("cannot read the run's summary: %s", exc)
        summary = None
    if summary is None:
        summary = summarize(run_uri, "FAILED", f"the run's process ended with exit status {child.returncode}")
    summary["wall_seconds"] = round(time.perf_counter() - started, 1)
    summary["artifacts"]["kfp_outputs"] = str(Path(cfg.workspace).resolve() / "kfp")
    summary["artifacts"]["log"] = str(log_path)
    if summary.get("status") != "SUCCEEDED":
        summary["failure_tail"] = progress.failure_tail()
        down = _service_down(cfg, data_root, run_uri)
        if down:  # say which service took the run down, in one line, before the step's own words
            summary["error"] = f"{down} (the run failed while it was down; step error: {summary.get('error')})"
    _end_orphans(cfg, token)
    try:
        storage.write_json(summary_uri, summary)
    except StorageError as exc:
        log.warning("cannot write the run's summary to %s: %s", summary_uri, exc)
    return summary


def _service_down(cfg: Config, data_root: str, run_uri: str) -> str | None:
    from components.learn import tracking
    from components.steps import check_services

    try:
        check_services(tracking.tracking_uri(cfg), (data_root, run_uri))
    except ServiceUnavailable as exc:
        return str(exc)
    return None


def _end_dead_runs(cfg: Config) -> None:
    """MLflow runs left RUNNING by an earlier pipeline run whose processes are all gone (its parent
    was SIGKILLed, so nothing of it could end them) end KILLED before this run starts."""
    from components.learn import tracking

    try:
        tokens = tracking.running_tokens(cfg)
    except Exception as exc:  # noqa: BLE001 (housekeeping: never stops a run from starting)
        log.warning("could not check for MLflow runs left RUNNING: %s", exc)
        return
    for token in tokens:
        if not marked(token):
            _end_orphans(cfg, token)


def _end_orphans(cfg: Config, token: str) -> None:
    """MLflow runs of this pipeline run left RUNNING (their step was SIGKILLed) end KILLED."""
    from components.learn import tracking

    try:
        ended = tracking.end_orphaned_runs(cfg, token)
    except Exception as exc:  # noqa: BLE001 (MLflow itself may be down; the summary already says why the run failed)
        log.warning("could not check for MLflow runs left RUNNING: %s", exc)
        return
    if ended:
        log.warning("ended MLflow run(s) left RUNNING by a killed step as KILLED: %s", ", ".join(ended))


def _record(storage: Storage, run_uri: str, step: str) -> dict | None:
    uri = join(run_uri, "steps", f"{step}.json")
    try:
        return storage.read_json(uri) if storage.exists(uri) else None
    except Exception:  # noqa: BLE001 (a figure for the progress line only; never fails the run)
        return None


def _print(text: str, replace: bool) -> None:
    if replace:
        sys.stdout.write("\r" + text)
    else:
        sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _child(spec_path: str) -> int:
    from components.core.config import config_from_json
    from components.core.logs import configure

    configure()
    spec = json.loads(Path(spec_path).read_text())
    cfg = config_from_json(spec["config"])
    threading.Thread(target=_watch_parent, args=(spec["parent"], os.environ[RUN_TOKEN], spec_path),
                     daemon=True).start()
    tune_trials = spec.get("tune_trials", 0)
    helper = _start_shared_ray(cfg, tune_trials)
    try:
        execute(cfg, spec["data_root"], spec["run_uri"], spec["last_weeks"],
                spec["fail_on_rejected"], spec["simulate_if_empty"], tune_trials)
    except Exception as exc:  # noqa: BLE001 (the local runner raises on some failures even with raise_on_error=False)
        log.error("pipeline failed: %s", exc)
        return 1
    finally:
        if helper is not None:
            from components.learn.ray_runtime import stop_helper

            stop_helper(helper)
    return 0


def _start_shared_ray(cfg: Config, tune_trials: int) -> subprocess.Popen | None:
    """When the run's steps use local Ray (training on workers, or tuning), start it now, in the
    background, for all of them (``components.learn.ray_runtime``); None when no step needs it."""
    if cfg.train.backend != "local" or not (cfg.train.num_workers > 0 or tune_trials > 0):
        return None
    from components.core.storage import local_path
    from components.learn.ray_runtime import start_helper

    cpus = int(max(cfg.train.num_workers * cfg.train.cpus_per_worker, 1))
    return start_helper(local_path(cfg.workspace).resolve() / "ray" / f"address-{os.getpid()}.json", cpus)


if __name__ == "__main__" and sys.argv[1:2] == ["--child"]:
    raise SystemExit(_child(sys.argv[2]))
if __name__ == "__main__" and sys.argv[1:2] == ["--end-orphans"]:
    raise SystemExit(_end_orphans_of(sys.argv[2], sys.argv[3]))
