"""Tuning on the cluster: the tune step hands the features to a KubeRay RayJob running Ray Tune.

The same staging as training (``train_job.stage_inputs``): features, net and a
local-backend config go to S3; the RayJob runs ``servicetime tune --features URI
--out URI``, which searches on the RayJob's Ray cluster (``tune.search_features``,
trials spread over its workers) and writes the trials as JSON; the pipeline pod
reads them back and does the tracking (parent run, a child per trial) itself, so
the Ray pods need no MLflow access.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from components.core.config import Config, config_from_json
from components.core.storage import Storage, join

log = logging.getLogger(__name__)
TRIALS_FILE = "trials.json"
TIMEOUT_S = 2 * 3600


def job_name(run_name: str) -> str:
    from components.cluster.train_job import job_name as train_name

    return "tune-" + train_name(run_name).removeprefix("train-")


def rayjob_for(cfg: Config, uris: dict[str, str], run_name: str, trials: int) -> dict:
    from components.cluster.rayjob import build_rayjob

    entrypoint = ["servicetime", "tune", "--features", uris["features"], "--trials", str(trials),
                  "--config-uri", uris["config"], "--out", uris["out"]]
    # One worker per parallel trial (each trial takes one CPU), at most the configured workers.
    workers = max(1, min(trials, cfg.train.num_workers or 1))
    return build_rayjob(job_name(run_name), entrypoint, workers, 1.0, "2Gi", {"SERVICETIME_RUN_NAME": run_name},
                        active_deadline_s=TIMEOUT_S)


def tune_on_kuberay(cfg: Config, features_dir: Path, trials: int, run_name: str) -> list[dict[str, Any]]:
    """Submit the search as a RayJob and return its trials (as ``tune.run_search`` does locally)."""
    from components.cluster.rayjob import run_rayjob
    from components.cluster.train_job import stage_inputs
    from components.core.platform import platform
    from components.learn.model import NetConfig
    from components.learn.tune import _net_dict

    uris = stage_inputs(cfg, features_dir, NetConfig.from_dict(_net_dict(cfg, features_dir)), run_name)
    manifest = rayjob_for(cfg, uris, run_name, trials)
    namespace = cfg.deploy.namespace or platform().namespace
    log.info("submitting RayJob %s (%d trials) in %s", manifest["metadata"]["name"], trials, namespace)
    outcome = run_rayjob(manifest, namespace, TIMEOUT_S)
    log.info("RayJob %s finished: %s in %.0f s", manifest["metadata"]["name"], outcome["status"], outcome["duration_s"])
    return json.loads(Storage().read_bytes(join(uris["out"], TRIALS_FILE)))


def tune_entrypoint(features_uri: str, config_uri: str, out_uri: str, trials: int) -> list[dict[str, Any]]:
    """What the RayJob runs: the search on staged features; the trials land in ``<out>/trials.json``."""
    from components.learn.features import TRAIN, VAL
    from components.learn.tune import run_search

    storage = Storage()
    cfg = config_from_json(storage.read_bytes(config_uri).decode())
    net = storage.read_json(join(features_uri, "net.json"))
    with tempfile.TemporaryDirectory() as tmp:
        results = run_search(storage.read_bytes(join(features_uri, TRAIN)), storage.read_bytes(join(features_uri, VAL)),
                             net, cfg.train, trials, Path(tmp) / "ray")
    for t in results:
        t.pop("path", None)  # the trial folders were on the RayJob's disk
    storage.write_bytes(join(out_uri, TRIALS_FILE), json.dumps(results).encode())
    log.info("search finished: %d trials; trials at %s", len(results), join(out_uri, TRIALS_FILE))
    return results
