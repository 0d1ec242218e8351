"""Tune: search the model's settings before training (the pipeline's ``tune_trials``; 0 = off)."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import fields
from pathlib import Path

from components.core.config import Config
from components.steps import record
from components.steps.outcomes import Tuned

log = logging.getLogger(__name__)


def tune_step(cfg: Config, features_dir: str | Path, trials: int, data_version: str,
              run_uri: str | None = None) -> Tuned:
    """Run ``trials`` trials on the prepared features; return (and record) the best settings.

    ``settings_json`` is what the train step lays over its config: the best trial's
    settings, or ``""`` when tuning is off, so the train step keeps its own (and a
    ``tuning/best.json`` an earlier ``servicetime tune`` left in the workspace).
    """
    if trials <= 0:
        return record(run_uri, Tuned(0, ""))
    from components.learn import tune

    started = time.perf_counter()
    features_dir = Path(features_dir)
    if cfg.train.backend == "kuberay":
        from components.cluster.tune_job import tune_on_kuberay

        results = tune_on_kuberay(cfg, features_dir, trials, f"{time.strftime('%Y%m%d-%H%M%S')}-{data_version[:8]}")
    else:
        results = tune.search_features(cfg, features_dir, trials, tune.tuning_dir(cfg) / "ray")
    summary = tune.finish_search(cfg, results, data_version, started)
    kept = {f.name: summary[f.name] for f in fields(Tuned) if f.name in summary}
    return record(run_uri, Tuned(**kept, settings_json=json.dumps(summary["best_settings"])))
