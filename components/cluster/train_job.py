"""Training on the cluster: the train step hands its inputs to a KubeRay RayJob and reads the result back.

The pipeline pod (the caller) uploads the encoded features and the config to
MinIO, submits a RayJob whose entry point is ``servicetime train`` (which runs
``train_with_ray``, the same function as the local path, inside the RayJob's Ray
cluster, checkpointing to ``s3://``), waits for it, and downloads the result.
"""

from __future__ import annotations

import io
import logging
import re
import time
from pathlib import Path

import torch

from components.core.config import Config, config_from_json
from components.core.platform import platform
from components.core.storage import Storage, join
from components.learn.features import TRAIN, VAL
from components.learn.model import NetConfig
from components.learn.ray_train import train_with_ray
from components.learn.train import TrainResult

log = logging.getLogger(__name__)
RESULT = "result.pt"  # the weights only (a state dict), loaded with weights_only=True
RESULT_META = "result.json"  # everything else, as JSON
TIMEOUT_S = 3 * 3600


def job_name(run_name: str) -> str:
    """A DNS-1123 name KubeRay accepts (it derives pod names from it)."""
    return ("train-" + re.sub(r"[^a-z0-9-]", "-", run_name.lower()))[:40].rstrip("-")


def stage_inputs(cfg: Config, features_dir: Path, net: NetConfig, run_name: str) -> dict[str, str]:
    storage = Storage()
    base = f"s3://{platform().buckets.artifacts}/train-inputs/{run_name}"
    for name in (TRAIN, VAL):
        storage.write_bytes(join(base, name), (features_dir / name).read_bytes())
    storage.write_json(join(base, "net.json"), net.to_dict())
    local = cfg.model_copy(update={"train": cfg.train.model_copy(update={"backend": "local"})})
    storage.write_text(join(base, "config.json"), local.model_dump_json())
    return {"features": base, "config": join(base, "config.json"), "out": join(base, "result")}


def rayjob_for(cfg: Config, uris: dict[str, str], run_name: str) -> dict:
    from components.cluster.rayjob import build_rayjob

    entrypoint = [
        "servicetime",
        "train",
        "--features",
        uris["features"],
        "--config",
        uris["config"],
        "--out",
        uris["out"],
    ]
    env = {"SERVICETIME_RUN_NAME": run_name}
    return build_rayjob(job_name(run_name), entrypoint, cfg.train.num_workers, cfg.train.cpus_per_worker, "2Gi", env,
                        active_deadline_s=TIMEOUT_S)


def train_on_kuberay(cfg: Config, features_dir: Path, net: NetConfig, run_name: str) -> TrainResult:
    from components.cluster.rayjob import run_rayjob

    started = time.perf_counter()
    uris = stage_inputs(cfg, Path(features_dir), net, run_name)
    manifest = rayjob_for(cfg, uris, run_name)
    namespace = cfg.deploy.namespace or platform().namespace
    log.info("submitting RayJob %s (%d workers) in %s", manifest["metadata"]["name"], cfg.train.num_workers, namespace)
    outcome = run_rayjob(manifest, namespace, TIMEOUT_S)
    log.info("RayJob %s finished: %s in %.0f s", manifest["metadata"]["name"], outcome["status"], outcome["duration_s"])
    result = load_result(uris["out"])
    result.seconds = time.perf_counter() - started
    result.extra["rayjob"] = manifest["metadata"]["name"]
    return result


def save_result(result: TrainResult, out_uri: str) -> None:
    """The weights as a state dict, the rest as JSON: reading them back never unpickles code."""
    buf = io.BytesIO()
    torch.save(dict(result.state_dict), buf)
    storage = Storage()
    storage.write_bytes(join(out_uri, RESULT), buf.getvalue())
    storage.write_json(join(out_uri, RESULT_META), {
        "net": result.net.to_dict(), "history": result.history, "best_epoch": result.best_epoch,
        "seconds": result.seconds, "samples_seen": result.samples_seen, "num_workers": result.num_workers,
        "extra": {k: v for k, v in result.extra.items() if isinstance(v, (int, float, str))}})


def load_result(out_uri: str) -> TrainResult:
    storage = Storage()
    state_dict = torch.load(io.BytesIO(storage.read_bytes(join(out_uri, RESULT))), weights_only=True)
    d = storage.read_json(join(out_uri, RESULT_META))
    return TrainResult(state_dict, NetConfig.from_dict(d["net"]), d["history"], d["best_epoch"], d["seconds"],
                       d["samples_seen"], d["num_workers"], extra=d["extra"])


def train_entrypoint(features_uri: str, config_uri: str, out_uri: str) -> TrainResult:
    """What the RayJob runs: the same ``train_with_ray`` as the local path, data and result on S3."""
    storage = Storage()
    cfg = config_from_json(storage.read_bytes(config_uri).decode())
    net = NetConfig.from_dict(storage.read_json(join(features_uri, "net.json")))
    checkpoints = cfg.train.checkpoint_uri or f"s3://{platform().buckets.artifacts}/checkpoints"
    run_name = features_uri.rstrip("/").rsplit("/", 1)[-1]
    result = train_with_ray(join(features_uri, TRAIN), join(features_uri, VAL), net, cfg.train,
                            checkpoints, run_name)
    save_result(result, out_uri)
    log.info("training finished: best val MAE %.1f s; result at %s", result.best_val_mae, out_uri)
    return result
