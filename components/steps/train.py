"""Train: in-process, on local Ray, or as a KubeRay RayJob; track in MLflow and register the candidate."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import mlflow
import pandas as pd

from components.core.config import Config
from components.core.storage import Storage, file_lock, join, local_path
from components.data.drift import Reference
from components.learn import tracking
from components.learn.bundle import calibrate_bundle, save_bundle
from components.learn.features import (
    HISTORY_FILE,
    REFERENCE_FILE,
    SPLIT_FILE,
    TRAIN,
    TRANSFORM_FILE,
    VAL,
    VAL_FRAME,
    FeatureTransform,
)
from components.learn.planning import calibrate_windows
from components.learn.ray_train import train_with_ray
from components.learn.train import Arrays, TrainResult, net_config, train_in_process
from components.learn.tune import apply_tuned
from components.steps import guarded, record
from components.steps.outcomes import Trained

log = logging.getLogger(__name__)


FINISHED = ".servicetime-finished"  # marks checkpoints whose training completed (nothing to resume)


def checkpoint_key(cfg: Config, data_version: str) -> str:
    """Ray's run name for local training: the same data and config give the same name, so a run
    that was killed mid-training is resumed by the next run of that data and config."""
    return f"train-{data_version[:12]}-{cfg.hash()}"


def fit(cfg: Config, features_dir: Path, run_name: str, data_version: str = "") -> TrainResult:
    """Pick the training path from config: 0 workers in-process, else Ray (local or KubeRay)."""
    train = Arrays.from_bytes((features_dir / TRAIN).read_bytes())
    transform = FeatureTransform.load(features_dir / TRANSFORM_FILE)
    net = net_config(cfg, transform, train)
    if cfg.train.num_workers == 0:
        val = Arrays.from_bytes((features_dir / VAL).read_bytes())
        return train_in_process(train, val, net, cfg.train)
    if cfg.train.backend == "kuberay":
        from components.cluster.train_job import train_on_kuberay

        return train_on_kuberay(cfg, features_dir, net, run_name)
    checkpoints = cfg.train.checkpoint_uri or str((local_path(cfg.workspace) / "checkpoints").resolve())
    key = checkpoint_key(cfg, data_version) if data_version else run_name
    locks = local_path(cfg.workspace).resolve() / "locks"
    # A run of the same data and config going on right now owns those checkpoints: train apart from it.
    with file_lock(locks / f"{key}.lock", blocking=False) as owned:
        if not owned:
            key = run_name
        storage, folder = Storage(), join(checkpoints, key)
        if storage.exists(join(folder, FINISHED)):  # a finished run's: start afresh, do not "resume" a done run
            storage.delete_prefix(folder)
        elif storage.list(folder):
            log.warning("resuming the checkpoints of an earlier, interrupted run of this data and config: %s", folder)
        result = train_with_ray(str((features_dir / TRAIN).resolve()), str((features_dir / VAL).resolve()), net,
                                cfg.train, checkpoints, key)
        # Kept for inspection until the next run of this data and config, which removes them.
        storage.write_text(join(folder, FINISHED), f"{run_name}\n")
    return result


def train_step(cfg: Config, features_dir: str | Path, bundle_dir: str | Path, data_version: str,
               run_uri: str | None = None) -> Trained:
    with guarded("train", run_uri, tracking.tracking_uri(cfg)):
        return _train_step(cfg, features_dir, bundle_dir, data_version, run_uri)


def _train_step(cfg: Config, features_dir: str | Path, bundle_dir: str | Path, data_version: str,
                run_uri: str | None = None) -> Trained:
    """Train, calibrate, log and register a candidate.

    When ``train.use_tuned`` is true and ``<workspace>/tuning/best.json`` exists (written by
    ``servicetime tune``), its settings are laid over ``cfg.train`` first; the MLflow params and
    the step record then show the settings actually used, and ``tuned_from`` names the file.
    """
    features_dir = Path(features_dir)
    cfg, tuned, tuned_path = apply_tuned(cfg)
    if tuned:
        log.info("using tuned settings from %s: %s", tuned_path, ", ".join(f"{k}={v}" for k, v in tuned.items()))
    tracking.setup(cfg)
    run_name = f"train-{time.strftime('%Y%m%d-%H%M%S')}-{data_version[:8]}"
    with tracking.start_run(run_name=run_name) as run:
        tags = tracking.lineage(cfg, data_version)
        mlflow.set_tags(tags | ({"tuned_from": str(tuned_path)} if tuned else {}))
        mlflow.log_params({f"train.{k}": v for k, v in cfg.train.model_dump().items()} |
                          {"split.val_weeks": cfg.split.val_weeks, "split.test_weeks": cfg.split.test_weeks})
        result = fit(cfg, features_dir, run_name, data_version)
        for h in result.history:
            mlflow.log_metrics({"train_loss": h["train_loss"], "val_mae_s": h["val_mae_s"],
                                "epoch_seconds": h["epoch_seconds"]}, step=int(h["epoch"]))
        timings = {k: v for k, v in result.extra.items() if isinstance(v, (int, float))}
        mlflow.log_metrics({"train_seconds": result.seconds, "samples_per_s": result.samples_per_s,
                            "best_val_mae_s": result.best_val_mae, "best_epoch": result.best_epoch, **timings})
        split = json.loads((features_dir / SPLIT_FILE).read_text())
        metadata = {"run_id": run.info.run_id, **tags, "num_workers": result.num_workers,
                    "best_val_mae_s": result.best_val_mae, "data_until": split.get("data_until")}
        bundle = save_bundle(
            bundle_dir, result.state_dict, result.net, FeatureTransform.load(features_dir / TRANSFORM_FILE),
            pd.read_parquet(features_dir / HISTORY_FILE),
            Reference.from_dict(json.loads((features_dir / REFERENCE_FILE).read_text())), metadata)
        # Before logging: the registered model carries its mean correction and interval calibration.
        val_frame = pd.read_parquet(features_dir / VAL_FRAME)
        calibration = calibrate_bundle(bundle, val_frame, cfg.calibration)["model"]
        window = calibrate_windows(bundle, val_frame, cfg.calibration.interval_nominal)  # for `servicetime plan`
        mlflow.log_metrics({f"window_q_high_bin{i}": q for i, q in enumerate(window.q_high)})
        mlflow.log_metrics({"calibration_factor": calibration.factor["*"],
                            "interval_low_ratio": calibration.low_ratio["*"],
                            "interval_high_ratio": calibration.high_ratio["*"]})
        model_uri = tracking.log_model(bundle)
        version = tracking.register(cfg, model_uri, tags={"data_version": data_version, "run_id": run.info.run_id})
    log.info("trained in %.1f s (%.0f samples/s), best val MAE %.1f s; registered %s version %s",
             result.seconds, result.samples_per_s, result.best_val_mae, tracking.model_name(cfg), version)
    return record(run_uri, Trained(run.info.run_id, model_uri, version, tracking.model_name(cfg), str(bundle),
                                   result.num_workers, result.seconds, result.samples_per_s, result.best_val_mae,
                                   result.best_epoch, cfg.train.model_dump(mode="json"),
                                   str(tuned_path) if tuned else None, timings))
