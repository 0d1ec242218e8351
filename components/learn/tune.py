"""Hyperparameter search on Ray Tune: the model's settings, searched with the same loop as ``train``.

``components.flows.tune.tune_workspace`` prepares the workspace's features exactly as the pipeline does
(ingest, validate, featurize; the simulator fills an empty default data root, as
``servicetime run`` does), then runs a Ray Tune search over a few ``TrainConfig``
fields (``SEARCH_SPACE``):

- trial 0 is the configured defaults (``points_to_evaluate``), so what the search
  bought over the defaults is measured in the same search, on the same data and seed;
- every trial trains in-process with ``components.learn.train.fit_loop`` on one CPU and
  reports ``val_mae_s`` to Tune after each epoch (``ray.tune.report``);
- ASHA (``ASHAScheduler``, time unit: epochs) stops weak trials early;
- Ray runs locally, bound to 127.0.0.1, and is shut down at the end when this
  module started it.

Tracking: one MLflow run "tune" and, nested under it, one child run per trial
(``mlflow.parentRunId``) with the trial's settings as params and its per-epoch
``val_mae_s``; the children are logged from the driver once the results are back.

The best settings land in ``<workspace>/tuning/best.json``::

    {"settings": {<TrainConfig field>: value, ...},
     "provenance": {"trials": ..., "best_val_mae_s": ..., "defaults_val_mae_s": ...,
                    "improvement_pct": ..., "created_at": ..., ...}}

with a Markdown report beside it (``report.md``). The train step overlays
``settings`` onto ``cfg.train`` when the file exists and ``train.use_tuned`` is
true (``apply_tuned``); set ``train.use_tuned: false`` to train with the YAML settings.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from components.core.config import Config, TrainConfig
from components.core.storage import local_path

log = logging.getLogger(__name__)

TUNING_DIR = "tuning"
BEST_FILE = "best.json"
REPORT_FILE = "report.md"
METRIC = "val_mae_s"

# The searched TrainConfig fields. ``hidden`` is searched as a string ("128x64") because
# Tune's ``points_to_evaluate`` and result configs handle flat scalars most simply.
HIDDEN_CHOICES = ("64x32", "128x64", "256x128", "128x64x32")
SEARCH_FIELDS = ("lr", "hidden", "embedding_dim", "dropout", "batch_size", "weight_decay")


def tuning_dir(cfg: Config) -> Path:
    return local_path(cfg.workspace) / TUNING_DIR


def best_path(cfg: Config) -> Path:
    return tuning_dir(cfg) / BEST_FILE


# --- Overlay: what ``train`` reads -----------------------------------------------------------

def load_tuned(path: str | Path) -> dict[str, Any]:
    """The ``settings`` of a best.json, checked: only TrainConfig fields, values TrainConfig accepts."""
    data = json.loads(Path(path).read_text())
    settings = data.get("settings")
    if not isinstance(settings, dict) or not settings:
        raise ValueError(f"{path}: no 'settings' object")
    unknown = sorted(set(settings) - set(TrainConfig.model_fields))
    if unknown:
        raise ValueError(f"{path}: not TrainConfig fields: {', '.join(unknown)}")
    TrainConfig.model_validate(settings)  # a bad value fails here, not halfway through training
    return settings


def apply_tuned(cfg: Config) -> tuple[Config, dict[str, Any] | None, Path | None]:
    """``cfg`` with the tuned settings laid over ``cfg.train``, the settings used, and their file.

    Returns ``(cfg, None, None)`` unchanged when ``train.use_tuned`` is false or the
    workspace holds no ``tuning/best.json``.
    """
    path = best_path(cfg)
    if not cfg.train.use_tuned or not path.exists():
        return cfg, None, None
    settings = load_tuned(path)
    train = TrainConfig.model_validate({**cfg.train.model_dump(), **settings})
    return cfg.model_copy(update={"train": train}), settings, path


# --- The search --------------------------------------------------------------------------------

def hidden_to_str(hidden: list[int] | tuple[int, ...]) -> str:
    return "x".join(str(int(h)) for h in hidden)


def hidden_from_str(text: str) -> list[int]:
    return [int(h) for h in text.split("x")]


def search_space() -> dict[str, Any]:
    from ray import tune

    return {
        "lr": tune.loguniform(3e-4, 3e-2),
        "hidden": tune.choice(list(HIDDEN_CHOICES)),
        "embedding_dim": tune.choice([4, 8, 16]),
        "dropout": tune.uniform(0.0, 0.3),
        "batch_size": tune.choice([128, 256, 512]),
        "weight_decay": tune.loguniform(1e-6, 1e-3),
    }


def defaults_point(train: TrainConfig) -> dict[str, Any]:
    """The configured settings, in the search space's encoding: trial 0."""
    return {"lr": train.lr, "hidden": hidden_to_str(train.hidden), "embedding_dim": train.embedding_dim,
            "dropout": train.dropout, "batch_size": train.batch_size, "weight_decay": train.weight_decay}


def to_settings(point: dict[str, Any]) -> dict[str, Any]:
    """A trial's config as TrainConfig fields (plain JSON values)."""
    out = {k: point[k] for k in SEARCH_FIELDS}
    out["hidden"] = hidden_from_str(point["hidden"])
    out["lr"], out["dropout"], out["weight_decay"] = float(out["lr"]), float(out["dropout"]), float(out["weight_decay"])
    out["embedding_dim"], out["batch_size"] = int(out["embedding_dim"]), int(out["batch_size"])
    return out


def _trial(config: dict, base: dict, net: dict, train_bytes: bytes, val_bytes: bytes) -> None:
    """One Tune trial: the train step's in-process path with this trial's settings."""
    import torch
    from ray import tune
    from torch.utils.data import DataLoader

    from components.learn.model import NetConfig, ServiceTimeNet
    from components.learn.train import Arrays, LoopState, ShuffledBatches, fit_loop, seed_everything

    torch.set_num_threads(1)  # one CPU per trial
    settings = to_settings(config)
    cfg = TrainConfig.model_validate({**base, **settings, "num_workers": 0})
    netcfg = replace(NetConfig.from_dict(net), embedding_dim=cfg.embedding_dim, hidden=tuple(cfg.hidden),
                     dropout=cfg.dropout)
    train, val = Arrays.from_bytes(train_bytes), Arrays.from_bytes(val_bytes)
    seed_everything(cfg.seed)
    batches = ShuffledBatches(train, cfg.batch_size, cfg.seed)
    loader = DataLoader(batches, batch_size=None, shuffle=True, generator=torch.Generator().manual_seed(cfg.seed))

    def on_epoch(state: LoopState, metrics: dict[str, float]) -> None:
        tune.report({METRIC: metrics["val_mae_s"], "train_loss": metrics["train_loss"],
                     "epoch": int(metrics["epoch"]), "best_val_mae_s": state.best_val})

    fit_loop(ServiceTimeNet(netcfg), loader, val, cfg, LoopState(), on_epoch, set_epoch=batches.reshuffle)


def _start_ray(cpus: int) -> bool:
    """A local Ray on loopback; True when this call started it (and so must shut it down)."""
    import ray

    from components.learn.ray_runtime import ADDRESS_FILE_ENV, connect

    if ray.is_initialized():
        return False
    if os.environ.get("RAY_ADDRESS") or os.environ.get(ADDRESS_FILE_ENV):  # a RayJob's cluster, a run's Ray
        return connect(cpus, log_to_driver=False)
    ray.init(num_cpus=cpus, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
             configure_logging=False)
    return True


def run_search(train_bytes: bytes, val_bytes: bytes, net: dict, train: TrainConfig, trials: int,
               storage_dir: Path, seed: int | None = None) -> list[dict[str, Any]]:
    """Run ``trials`` Tune trials (trial 0: the defaults); one dict per trial, in trial order.

    Each dict: ``trial``, ``settings`` (TrainConfig fields), ``history`` (val_mae_s per epoch),
    ``best_val_mae_s``, ``epochs`` run and ``early_stopped`` (stopped by ASHA or patience
    before ``train.epochs``).
    """
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    if trials < 1:
        raise ValueError("trials must be at least 1")
    cpus = max(1, min(trials, os.cpu_count() or 1))
    # Tune's newer console output ignores verbose=0 and draws tables; the classic one honours it.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    started_ray = _start_ray(cpus)
    try:
        trainable = tune.with_resources(
            tune.with_parameters(_trial, base=train.model_dump(), net=net, train_bytes=train_bytes,
                                 val_bytes=val_bytes),
            {"cpu": 1})
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=train.epochs, grace_period=1,
                                  reduction_factor=2)
        search = BasicVariantGenerator(points_to_evaluate=[defaults_point(train)],
                                       random_state=train.seed if seed is None else seed)
        storage_dir.mkdir(parents=True, exist_ok=True)
        tuner = tune.Tuner(
            trainable, param_space=search_space(),
            tune_config=tune.TuneConfig(metric=METRIC, mode="min", scheduler=scheduler, search_alg=search,
                                        num_samples=trials),
            run_config=tune.RunConfig(name=f"tune-{time.strftime('%Y%m%d-%H%M%S')}",
                                      storage_path=str(storage_dir.resolve()), verbose=0))
        grid = tuner.fit()
        out = []
        for result in grid:
            if result.error:
                raise RuntimeError(f"tune trial failed: {result.error}")
            frame = result.metrics_dataframe
            history = [float(v) for v in frame[METRIC]] if frame is not None and METRIC in frame else []
            trial_id = str(result.metrics.get("trial_id", ""))
            out.append({"trial_id": trial_id, "settings": to_settings(result.config), "history": history,
                        "best_val_mae_s": min(history) if history else math.inf, "epochs": len(history),
                        "early_stopped": len(history) < train.epochs, "path": result.path})
    finally:
        if started_ray:
            ray.shutdown()
    # Trial ids end in a zero-padded counter in creation order, so trial 0 (the defaults) sorts first.
    out.sort(key=lambda t: t["trial_id"].rsplit("_", 1)[-1])
    defaults = to_settings(defaults_point(train))
    first = next((i for i, t in enumerate(out) if t["settings"] == defaults), None)
    if first is None:
        raise RuntimeError("the defaults' trial is missing from the results")
    out.insert(0, out.pop(first))
    for i, t in enumerate(out):
        t["trial"] = i
    return out


# --- The workspace: features, search, tracking, best.json -----------------------------------

def _net_dict(cfg: Config, features: Path) -> dict:
    from components.learn.features import TRAIN, TRANSFORM_FILE, FeatureTransform
    from components.learn.train import Arrays, net_config

    train = Arrays.from_bytes((features / TRAIN).read_bytes())
    return net_config(cfg, FeatureTransform.load(features / TRANSFORM_FILE), train).to_dict()


def _log_mlflow(cfg: Config, results: list[dict], summary: dict, data_version: str,
                files: list[Path]) -> tuple[str, list[str]]:
    """The parent run "tune" and one nested child run per trial; returns (parent id, child ids)."""
    import mlflow

    from components.learn import tracking

    tracking.setup(cfg)
    children = []
    with mlflow.start_run(run_name="tune") as parent:
        mlflow.set_tags({**tracking.lineage(cfg, data_version), "kind": "tune"})
        mlflow.log_params({"trials": len(results), "scheduler": "ASHA", "metric": METRIC, "epochs": cfg.train.epochs,
                           "searched": ",".join(SEARCH_FIELDS)})
        for t in results:
            name = "trial-0-defaults" if t["trial"] == 0 else f"trial-{t['trial']}"
            with mlflow.start_run(run_name=name, nested=True) as child:
                mlflow.set_tags({"trial_id": t["trial_id"], "early_stopped": str(t["early_stopped"]).lower(),
                                 "defaults": str(t["trial"] == 0).lower()})
                mlflow.log_params({f"train.{k}": v for k, v in t["settings"].items()})
                for epoch, mae in enumerate(t["history"]):
                    mlflow.log_metric(METRIC, mae, step=epoch)
                mlflow.log_metrics({"best_val_mae_s": t["best_val_mae_s"], "epochs": t["epochs"]})
                children.append(child.info.run_id)
        mlflow.log_metrics({k: summary[k] for k in ("best_val_mae_s", "defaults_val_mae_s", "improvement_pct")})
        mlflow.log_params({f"best.{k}": v for k, v in summary["best_settings"].items()})
        for f in files:
            mlflow.log_artifact(str(f), artifact_path="tuning")
    return parent.info.run_id, children


def render_report(summary: dict, results: list[dict]) -> str:
    lines = ["# Hyperparameter search", "",
             f"{summary['trials']} trials on Ray Tune (ASHA on validation MAE, {summary['epochs']} epochs at most); "
             f"trial 0 is the configured defaults.", "",
             f"- defaults: validation MAE **{summary['defaults_val_mae_s']:.2f} s**",
             f"- best (trial {summary['best_trial']}): validation MAE **{summary['best_val_mae_s']:.2f} s**, "
             f"{summary['improvement_pct']:.1f} % better than the defaults",
             f"- stopped early: {summary['early_stopped']} of {summary['trials']} trials", "",
             "| trial | lr | hidden | embedding_dim | dropout | batch_size | weight_decay | epochs "
             "| best val MAE (s) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for t in results:
        s = t["settings"]
        mark = " (defaults)" if t["trial"] == 0 else ""
        lines.append(f"| {t['trial']}{mark} | {s['lr']:.2e} | {hidden_to_str(s['hidden'])} | {s['embedding_dim']} | "
                     f"{s['dropout']:.3f} | {s['batch_size']} | {s['weight_decay']:.1e} | {t['epochs']} | "
                     f"{t['best_val_mae_s']:.2f} |")
    lines += ["", "`train` uses the best settings (best.json beside this file) while `train.use_tuned` is true."]
    return "\n".join(lines) + "\n"


def summarize_search(cfg: Config, results: list[dict[str, Any]], data_version: str) -> dict[str, Any]:
    """What the search bought: best trial against trial 0 (the defaults)."""
    best = min(results, key=lambda t: t["best_val_mae_s"])
    defaults_mae = results[0]["best_val_mae_s"]
    return {"trials": len(results), "epochs": cfg.train.epochs, "best_trial": best["trial"],
            "best_val_mae_s": best["best_val_mae_s"], "defaults_val_mae_s": defaults_mae,
            "improvement_pct": 100.0 * (defaults_mae - best["best_val_mae_s"]) / defaults_mae,
            "early_stopped": sum(t["early_stopped"] for t in results), "best_settings": best["settings"],
            "data_version": data_version}


def write_best(path: Path, summary: dict[str, Any], defaults: dict[str, Any], mlflow_run_id: str | None) -> Path:
    """``best.json``: the settings ``train`` lays over its config, with where they came from."""
    provenance = {k: summary[k] for k in ("trials", "best_trial", "best_val_mae_s", "defaults_val_mae_s",
                                          "improvement_pct", "data_version")}
    provenance |= {"created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "metric": METRIC,
                   "scheduler": "ASHA", "defaults": defaults, "mlflow_run_id": mlflow_run_id}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"settings": summary["best_settings"], "provenance": provenance}, indent=2) + "\n")
    return path


def search_features(cfg: Config, features: Path, trials: int, storage_dir: Path) -> list[dict[str, Any]]:
    """The search on prepared features (a featurize step's output folder), on local Ray or a RayJob's."""
    from components.learn.features import TRAIN, VAL

    return run_search((features / TRAIN).read_bytes(), (features / VAL).read_bytes(), _net_dict(cfg, features),
                      cfg.train, trials, storage_dir)


def finish_search(cfg: Config, results: list[dict[str, Any]], data_version: str, started: float) -> dict[str, Any]:
    """Report, MLflow (the parent run and a child per trial) and ``tuning/best.json`` for finished trials."""
    out = tuning_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize_search(cfg, results, data_version)
    report = out / REPORT_FILE
    report.write_text(render_report(summary, results))
    path = write_best(out / BEST_FILE, summary, results[0]["settings"], None)
    parent, children = _log_mlflow(cfg, results, summary, data_version, [path, report])
    write_best(path, summary, results[0]["settings"], parent)  # again with the run id: best.json names its search
    summary |= {"best_path": str(path), "report_path": str(report), "mlflow_run_id": parent,
                "child_run_ids": children, "seconds": time.perf_counter() - started}
    log.info("tuned %d trials in %.0f s: best val MAE %.1f s vs defaults %.1f s (%.1f %% better); wrote %s",
             len(results), summary["seconds"], summary["best_val_mae_s"], summary["defaults_val_mae_s"],
             summary["improvement_pct"], path)
    return summary
