"""Experiment tracking and the model registry in MLflow (aliases, never the deprecated stages).

Every run carries lineage tags (git commit, dataset version, config hash,
package versions, seed). Every candidate is registered with the
``challenger`` alias; ``champion`` moves only on a blessed verdict, and the
previous champions are remembered so ``rollback`` is one call.
"""

from __future__ import annotations

import os
import subprocess
from importlib import metadata as importlib_metadata
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from components.config import Config
from components.platform import platform

CHAMPION = "champion"
CHALLENGER = "challenger"
HISTORY_TAG = "champion_history"  # comma-separated versions, oldest first
PACKAGES = ("torch", "ray", "mlflow", "kfp", "pandas", "numpy", "pandera", "pyarrow")


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
    """Point MLflow at the configured store and make sure the experiment exists."""
    os.environ.setdefault("MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK", "true")
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
    if mlflow.get_experiment_by_name(cfg.tracking.experiment) is None:
        location = None
        if uri.startswith("sqlite:"):  # keep artifacts beside the database, not in the cwd
            location = (Path(cfg.workspace).resolve() / "mlartifacts").as_uri()
        mlflow.create_experiment(cfg.tracking.experiment, artifact_location=location)
    mlflow.set_experiment(cfg.tracking.experiment)
    return uri


def git_commit() -> str:
    if os.environ.get("SERVICETIME_GIT_COMMIT"):
        return os.environ["SERVICETIME_GIT_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
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
        from components.bundle import Predictor

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
    previous = alias_version(cfg, CHAMPION)
    client.set_registered_model_alias(name, CHAMPION, version)
    history = [*_history(client, name), version]
    client.set_registered_model_tag(name, HISTORY_TAG, ",".join(history))
    client.set_model_version_tag(name, version, "promoted", "true")
    return {"name": name, "version": version, "previous": previous}


def rollback(cfg: Config, to_version: str | None = None) -> dict:
    """Move ``champion`` back: to ``to_version``, or to the champion before the current one."""
    client, name = MlflowClient(), model_name(cfg)
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
