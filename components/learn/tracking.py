"""Experiment tracking and the model registry in MLflow (aliases, never the deprecated stages).

Every run carries lineage tags (git commit, dataset version, config hash,
package versions, seed). Every candidate is registered with the
``challenger`` alias; ``champion`` moves only on a blessed verdict, and the
previous champions are remembered so ``rollback`` is one call.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata as importlib_metadata
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from components.core.config import Config
from components.core.platform import platform
from components.core.storage import ServiceUnavailable, file_lock

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
HISTORY_TAG = "champion_history"  # comma-separated versions, oldest first
PACKAGES = ("torch", "ray", "mlflow", "kfp", "pandas", "numpy", "pandera", "pyarrow")
RUN_TOKEN_ENV = "SERVICETIME_RUN_TOKEN"  # set by pipelines.local on every process of one pipeline run
RUN_TOKEN_TAG = "servicetime.run_token"
BLESSED_TAG = "blessed"  # "true" / "false" on a training run, set by its evaluation


def test_metric(model: str, metric: str) -> str:
    """The MLflow metric an evaluation logs for ``model``'s ``metric`` on the held-out test weeks, and
    what the continual loop and the lab checks read back: ``test_candidate_mae``, ``test_rules_late_share``."""
    return f"test_{model}_{metric}"


def slice_metric(figure: str, slice_name: str) -> str:
    """One slice's figure as an MLflow metric name part: ``bias__area_type_urban``. Evaluation logs it as
    ``test_candidate_bias__area_type_urban``, the online monitor as ``online_bias__area_type_urban``."""
    return f"{figure}__" + "".join(ch if ch.isalnum() else "_" for ch in slice_name)

# MLflow's client retries a dead server for about 4 minutes by default (7 retries, backoff factor 2,
# 120 s timeout). An outage must fail a step within a minute: 2 retries, about 3 s of backoff.
CLIENT_BUDGET = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}


class Interrupted(SystemExit):
    """The step was told to stop (SIGTERM): its MLflow run ends KILLED, not RUNNING."""


def tracking_uri(cfg: Config) -> str:
    """Config first, then the environment (a pod's MLFLOW_TRACKING_URI), then SQLite in the workspace."""
    if cfg.tracking.tracking_uri:
        return cfg.tracking.tracking_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{Path(cfg.workspace).resolve() / 'mlflow.db'}"


def model_name(cfg: Config) -> str:
    return cfg.tracking.model_name or platform().model_name


def setup(cfg: Config) -> str:
    """Point MLflow at the configured store and make sure the experiment exists.

    A workspace's SQLite store is created (migrated) and its experiment made under a file lock,
    so two runs starting together do not race on the migration; ``pipelines.local`` calls this
    once before any step starts.
    """
    os.environ.setdefault("MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK", "true")
    for key, value in CLIENT_BUDGET.items():
        os.environ.setdefault(key, value)
    uri = tracking_uri(cfg)
    # mlflow.set_*_uri also export the URI to os.environ, which would leak this
    # workspace into every later config and child process; keep the environment as it was.
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    with file_lock(_lock_path(cfg, "mlflow-init")):
        if mlflow.get_experiment_by_name(cfg.tracking.experiment) is None:
            location = None
            if uri.startswith("sqlite:"):  # keep artifacts beside the database, not in the cwd
                location = (Path(cfg.workspace).resolve() / "mlartifacts").as_uri()
            mlflow.create_experiment(cfg.tracking.experiment, artifact_location=location)
    mlflow.set_experiment(cfg.tracking.experiment)
    return uri


def _lock_path(cfg: Config, name: str) -> Path:
    return Path(cfg.workspace).resolve() / "locks" / f"{name}.lock"


@contextmanager
def registry_lock(cfg: Config) -> Iterator[None]:
    """Registry read-modify-writes (aliases, the champion history tag) one run at a time per workspace."""
    with file_lock(_lock_path(cfg, "registry")):
        yield


def preflight(uri: str, timeout_s: float = 3.0) -> None:
    """Raise ``ServiceUnavailable`` when an MLflow server (http/https URI) does not answer its health check."""
    if not uri.startswith(("http://", "https://")):
        return
    import httpx

    try:
        response = httpx.get(f"{uri.rstrip('/')}/health", timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise ServiceUnavailable(f"MLflow is not reachable at {uri}: {type(exc).__name__}: {exc}") from exc
    if response.status_code != 200:
        raise ServiceUnavailable(f"MLflow at {uri} is unhealthy: /health answered {response.status_code}")


@contextmanager
def start_run(**kwargs) -> Iterator[mlflow.ActiveRun]:
    """``mlflow.start_run`` that never leaves a run RUNNING: FAILED on an error, KILLED on SIGTERM/SIGINT.

    The run is tagged with the pipeline run's token, so what a SIGKILL leaves RUNNING is found
    and ended by ``end_orphaned_runs`` afterwards.
    """
    run = mlflow.start_run(**kwargs)
    if os.environ.get(RUN_TOKEN_ENV):
        mlflow.set_tag(RUN_TOKEN_TAG, os.environ[RUN_TOKEN_ENV])
    previous = None
    if threading.current_thread() is threading.main_thread():
        def interrupted(signum, frame):
            raise Interrupted(128 + signum)

        previous = signal.signal(signal.SIGTERM, interrupted)
    status = "FINISHED"
    try:
        yield run
    except (Interrupted, KeyboardInterrupt):
        status = "KILLED"
        raise
    except BaseException:
        status = "FAILED"
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        try:
            mlflow.end_run(status=status)
        except Exception as exc:  # noqa: BLE001 (the server may be the thing that is down; the step's own error wins)
            log.warning("could not end MLflow run %s as %s: %s", run.info.run_id, status, exc)


def running_tokens(cfg: Config) -> set[str]:
    """The pipeline-run tokens of MLflow runs still RUNNING (to find those whose pipeline run is gone)."""
    client = MlflowClient(tracking_uri(cfg))
    experiment = client.get_experiment_by_name(cfg.tracking.experiment)
    if experiment is None:
        return set()
    running = client.search_runs([experiment.experiment_id], filter_string="attributes.status = 'RUNNING'",
                                 max_results=500)
    return {r.data.tags[RUN_TOKEN_TAG] for r in running if RUN_TOKEN_TAG in r.data.tags}


def end_orphaned_runs(cfg: Config, token: str, status: str = "KILLED") -> list[str]:
    """End the runs (and logged models) of one pipeline run that are still RUNNING (PENDING) after it ended."""
    client = MlflowClient(tracking_uri(cfg))
    experiment = client.get_experiment_by_name(cfg.tracking.experiment)
    if experiment is None:
        return []
    mine = client.search_runs([experiment.experiment_id], filter_string=f"tags.`{RUN_TOKEN_TAG}` = '{token}'",
                              max_results=200)
    ended = []
    for run in mine:
        if run.info.status == "RUNNING":
            client.set_terminated(run.info.run_id, status)
            ended.append(run.info.run_id)
    run_ids = {r.info.run_id for r in mine}
    if run_ids:
        for model in client.search_logged_models([experiment.experiment_id], max_results=200):
            if model.source_run_id in run_ids and str(model.status).endswith("PENDING"):
                client.finalize_logged_model(model.model_id, "FAILED")
    return ended


def git_commit() -> str:
    if os.environ.get("SERVICETIME_GIT_COMMIT"):
        return os.environ["SERVICETIME_GIT_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def lineage(cfg: Config, data_version: str) -> dict[str, str]:
    tags = {"git_commit": git_commit(), "data_version": data_version, "config_hash": cfg.hash(),
            "seed": str(cfg.train.seed), "data_seed": str(cfg.data.seed)}
    for pkg in PACKAGES:
        try:
            tags[f"pkg.{pkg}"] = importlib_metadata.version(pkg)
        except importlib_metadata.PackageNotFoundError:
            tags[f"pkg.{pkg}"] = "absent"
    return tags


class ServiceTimePyfunc(mlflow.pyfunc.PythonModel):
    """MLflow wrapper so ``mlflow.pyfunc.load_model`` works too; serving loads the bundle directly."""

    def load_context(self, context):
        from components.learn.bundle import Predictor

        self.predictor = Predictor.load(context.artifacts["bundle"])

    def predict(self, context, model_input: pd.DataFrame, params=None):
        return self.predictor.predict(model_input)


def log_model(bundle_dir: Path) -> str:
    """Log the bundle as one MLflow model inside the active run; returns its runs:/ URI."""
    run = mlflow.active_run()
    mlflow.pyfunc.log_model(name="model", python_model=ServiceTimePyfunc(), artifacts={"bundle": str(bundle_dir)},
                            pip_requirements=[f"servicetime=={_own_version()}"])
    return f"runs:/{run.info.run_id}/model"


def _own_version() -> str:
    from components import __version__

    return __version__


def register(cfg: Config, model_uri: str, tags: dict[str, str] | None = None) -> str:
    """Register a candidate and point ``challenger`` at it; returns the version."""
    name = model_name(cfg)
    with registry_lock(cfg):
        mv = mlflow.register_model(model_uri, name, tags=tags)
        MlflowClient().set_registered_model_alias(name, CHALLENGER, mv.version)
    return str(mv.version)


def alias_version(cfg: Config, alias: str = CHAMPION) -> str | None:
    try:
        return str(MlflowClient().get_model_version_by_alias(model_name(cfg), alias).version)
    except MlflowException:
        return None


def _history(client: MlflowClient, name: str) -> list[str]:
    tag = client.get_registered_model(name).tags.get(HISTORY_TAG, "")
    return [v for v in tag.split(",") if v]


def promote(cfg: Config, version: str) -> dict:
    """Move ``champion`` to ``version`` (called only for a blessed candidate)."""
    client, name = MlflowClient(), model_name(cfg)
    with registry_lock(cfg):  # two runs promoting at once must not lose a history entry
        previous = alias_version(cfg, CHAMPION)
        client.set_registered_model_alias(name, CHAMPION, version)
        history = [*_history(client, name), version]
        client.set_registered_model_tag(name, HISTORY_TAG, ",".join(history))
        client.set_model_version_tag(name, version, "promoted", "true")
    return {"name": name, "version": version, "previous": previous}


def rollback(cfg: Config, to_version: str | None = None) -> dict:
    """Move ``champion`` back: to ``to_version``, or to the champion before the current one."""
    client, name = MlflowClient(), model_name(cfg)
    with registry_lock(cfg):
        return _rollback(client, name, cfg, to_version)


def _rollback(client: MlflowClient, name: str, cfg: Config, to_version: str | None) -> dict:
    current = alias_version(cfg, CHAMPION)
    history = _history(client, name)  # a stack of promotions, newest last
    if to_version is None:
        if history and history[-1] == current:
            history.pop()
        if not history:
            raise ValueError(f"no earlier champion of {name} to roll back to")
        to_version = history[-1]
    else:
        client.get_model_version(name, to_version)  # fails clearly if it does not exist
        history.append(to_version)
    client.set_registered_model_alias(name, CHAMPION, to_version)
    client.set_registered_model_tag(name, HISTORY_TAG, ",".join(history))
    return {"name": name, "from": current, "to": to_version}


def download_model(uri: str, dst: str | Path | None = None) -> Path:
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst) if dst else None))
