"""Deploy: put the new champion in front of traffic, check it, roll back if it misbehaves.

Locally the model server follows the ``champion`` alias by itself, so this step
is the canary check: load exactly what the server will load, score held-out
stops, and compare with the evaluation. On the cluster it drives a canary
Deployment through the Kubernetes API (``components.cluster.deploy``).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from components.core.config import Config
from components.core.schema import LABEL
from components.learn import tracking
from components.learn.bundle import Predictor
from components.learn.features import TEST
from components.steps import Rejected, guarded, record
from components.steps.outcomes import Deployed

log = logging.getLogger(__name__)


class DeployFailed(Rejected):
    """The new champion failed its canary check; the champion alias was rolled back."""


def canary_check(predictor: Predictor, test: pd.DataFrame, expected_mae: float, tolerance: float) -> dict:
    started = time.perf_counter()
    pred = predictor.predict(test)
    latency_ms = (time.perf_counter() - started) * 1000 / max(len(test), 1)
    mae = float(np.mean(np.abs(pred - test[LABEL].to_numpy(float))))
    problems = []
    if not np.all(np.isfinite(pred)):
        problems.append("non-finite predictions")
    if mae > expected_mae * (1 + tolerance):
        problems.append(f"MAE {mae:.1f} s exceeds evaluated {expected_mae:.1f} s by more than {tolerance:.0%}")
    return {
        "mae": mae,
        "expected_mae": expected_mae,
        "per_stop_ms": latency_ms,
        "rows": len(test),
        "problems": problems,
    }


def request_bodies(stops: pd.DataFrame, per_request: int = 20, limit: int = 50) -> list[bytes]:
    """``/predict`` bodies from held-out stops (planning-time columns only), for canary traffic."""
    from components.serving.api import FIELD_NAMES

    rows = stops[list(FIELD_NAMES)].head(per_request * limit)
    rows = rows.astype(object).where(rows.notna(), None)
    bodies = []
    for start in range(0, len(rows), per_request):
        chunk = rows.iloc[start:start + per_request].to_dict(orient="records")
        bodies.append(json.dumps({"stops": chunk}, default=lambda v: v.isoformat()).encode())
    return bodies


def kubernetes_rollout(cfg: Config, name: str, version: str, test: pd.DataFrame) -> dict:
    """The cluster canary: synthetic traffic from held-out stops, ``production`` moved on success."""
    from mlflow import MlflowClient

    from components.cluster import deploy
    from components.core.platform import platform

    client = MlflowClient()
    namespace = cfg.deploy.namespace or platform().namespace

    def set_production(to: str | None) -> str | None:
        previous = tracking.alias_version(cfg, deploy.PRODUCTION)
        if to is None:
            client.delete_registered_model_alias(name, deploy.PRODUCTION)
        else:
            client.set_registered_model_alias(name, deploy.PRODUCTION, to)
        return previous

    url = f"http://{deploy.MODEL_SERVER}.{namespace}:{platform().ports.model_server}/predict"
    bodies = request_bodies(test)
    return deploy.rollout(f"models:/{name}/{version}", namespace, cfg.deploy.prometheus_url, cfg.deploy.canary_seconds,
                          set_production=set_production, traffic=lambda s: deploy.drive_traffic(url, bodies, s))


def deploy_step(cfg: Config, features_dir: str | Path, expected_mae: float, run_uri: str | None = None) -> Deployed:
    with guarded("deploy", run_uri, tracking.tracking_uri(cfg)):
        return _deploy_step(cfg, features_dir, expected_mae, run_uri)


def _deploy_step(cfg: Config, features_dir: str | Path, expected_mae: float, run_uri: str | None = None) -> Deployed:
    tracking.setup(cfg)
    name = tracking.model_name(cfg)
    version = tracking.alias_version(cfg, tracking.CHAMPION)
    if version is None:
        raise DeployFailed(f"no champion alias on {name}: nothing to deploy")
    if cfg.deploy.backend == "kubernetes":
        outcome = kubernetes_rollout(cfg, name, version, pd.read_parquet(Path(features_dir) / TEST))
        if not outcome.get("promoted"):
            rolled = tracking.rollback(cfg)
            raise DeployFailed(
                f"canary of version {version} failed ({outcome.get('reasons')}); champion back to {rolled['to']}"
            )
        return record(run_uri, Deployed("kubernetes", version, outcome))
    test = pd.read_parquet(Path(features_dir) / TEST)
    with tempfile.TemporaryDirectory() as tmp:
        predictor = Predictor.load(tracking.download_model(f"models:/{name}@{tracking.CHAMPION}", tmp))
    check = canary_check(predictor, test, expected_mae, cfg.deploy.mae_tolerance)
    if check["problems"]:
        rolled = tracking.rollback(cfg)
        raise DeployFailed(f"version {version} failed its canary check: {'; '.join(check['problems'])}; "
                           f"champion rolled back to {rolled['to']}")
    log.info(
        "champion %s version %s passed its canary check (MAE %.1f s on %d stops)",
        name,
        version,
        check["mae"],
        check["rows"],
    )
    return record(run_uri, Deployed("local", version, {"name": name, "uri": f"models:/{name}@{tracking.CHAMPION}",
                                                       **check}))
