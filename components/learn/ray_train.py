"""Training on Ray Train V2 workers: ``TorchTrainer`` running the same ``fit_loop`` as the in-process path,
with the model wrapped by ``prepare_model`` and a loader from ``prepare_data_loader`` (PyTorch DDP, gloo),
checkpointing every epoch to a local or ``s3://`` storage path so that a killed worker resumes from the
last epoch."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from components.core.config import TrainConfig
from components.learn.model import NetConfig, ServiceTimeNet
from components.learn.train import (
    Arrays,
    LoopState,
    ShuffledBatches,
    TrainResult,
    fit_loop,
    load_state,
    save_state,
    seed_everything,
)

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "state.pt"


def _ray_worker(config: dict) -> None:
    """Runs on every Ray Train worker."""
    import ray.train
    import ray.train.torch
    import torch.distributed as dist

    from components.core.storage import Storage

    torch.set_num_threads(1)  # workers share the machine's cores; avoid oversubscription
    logging.getLogger("ray.train").setLevel(logging.WARNING)  # our own per-epoch line is enough
    cfg = TrainConfig.model_validate(config["train"])
    net = NetConfig.from_dict(config["net"])
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    if config.get("pid_dir"):
        Path(config["pid_dir"], f"rank{rank}.pid").write_text(str(os.getpid()))
    storage = Storage()
    train = Arrays.from_bytes(storage.read_bytes(config["train_uri"]))
    val = Arrays.from_bytes(storage.read_bytes(config["val_uri"]))

    seed_everything(cfg.seed)
    model = ray.train.torch.prepare_model(ServiceTimeNet(net))
    batches = ShuffledBatches(train, cfg.batch_size, cfg.seed)
    loader = ray.train.torch.prepare_data_loader(DataLoader(batches, batch_size=None, shuffle=True))
    state = LoopState()
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            state = load_state(Path(d) / CHECKPOINT_FILE)
        state.history = [*state.history]
        if rank == 0:
            log.warning("resuming from checkpoint after epoch %d", state.epoch - 1)
        if state.resumed is None:
            state.resumed = state.epoch

    def on_epoch(s: LoopState, metrics: dict[str, float]) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if rank == 0:
                save_state(s, Path(tmp) / CHECKPOINT_FILE)
                ckpt = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report({**metrics, "best_val_mae_s": s.best_val}, checkpoint=ckpt)
        if config.get("slow_epoch_s"):
            time.sleep(config["slow_epoch_s"])  # lets a failure test hit the run between epochs

    def should_stop(stop: bool) -> bool:
        # Every rank must leave the loop at the same epoch, or DDP would hang.
        flag = torch.tensor([1.0 if stop else 0.0])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def set_epoch(epoch: int) -> None:
        batches.reshuffle(epoch)
        if hasattr(loader, "sampler") and hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)  # the DistributedSampler: which batches this rank gets

    fit_loop(model, loader, val, cfg, state, on_epoch, should_stop, set_epoch)


def _storage_for(uri: str):
    """(storage_path, pyarrow filesystem or None) for Ray's RunConfig."""
    if not uri.startswith("s3://"):
        from components.core.storage import local_path

        path = local_path(uri).resolve()
        path.mkdir(parents=True, exist_ok=True)
        return str(path), None
    import pyarrow.fs as pafs

    from components.core.storage import s3_settings_from_env

    s = s3_settings_from_env()
    scheme, _, host = s.endpoint_url.partition("://")
    fs = pafs.S3FileSystem(access_key=s.access_key, secret_key=s.secret_key, endpoint_override=host,
                           scheme=scheme, region=s.region, allow_bucket_creation=True)
    return uri[len("s3://"):].rstrip("/"), fs


def ensure_ray(num_cpus: float) -> None:
    """Attach to KubeRay's cluster (in a RayJob) or the run's shared Ray, else start a local one."""
    from components.learn.ray_runtime import connect

    if not os.environ.get("RAY_ADDRESS"):
        # The preemption watcher is an actor that watches for cloud nodes being taken away; one local
        # machine has none, and its start is on the way to the first epoch.
        os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    connect(int(np.ceil(num_cpus)))


def train_with_ray(train_uri: str, val_uri: str, net: NetConfig, cfg: TrainConfig, checkpoint_uri: str,
                   run_name: str, pid_dir: str | None = None, slow_epoch_s: float = 0.0) -> TrainResult:
    """Distributed data-parallel training with Ray Train V2's TorchTrainer."""
    import ray.train
    from ray.train.torch import TorchTrainer

    started = time.perf_counter()
    ensure_ray(cfg.num_workers * cfg.cpus_per_worker)
    ray_ready = time.perf_counter()
    storage_path, fs = _storage_for(checkpoint_uri)
    trainer = TorchTrainer(
        _ray_worker,
        train_loop_config={"train": cfg.model_dump(), "net": net.to_dict(), "train_uri": train_uri,
                           "val_uri": val_uri, "pid_dir": pid_dir, "slow_epoch_s": slow_epoch_s},
        scaling_config=ray.train.ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                                               resources_per_worker={"CPU": cfg.cpus_per_worker}),
        torch_config=ray.train.torch.TorchConfig(backend="nccl" if cfg.use_gpu else "gloo"),
        run_config=ray.train.RunConfig(
            name=run_name,
            storage_path=storage_path,
            storage_filesystem=fs,
            failure_config=ray.train.FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
        ),
    )
    result = trainer.fit()
    if result.error:
        raise RuntimeError(f"Ray training failed: {result.error}")
    with result.checkpoint.as_directory() as d:
        state = load_state(Path(d) / CHECKPOINT_FILE)
    elapsed = time.perf_counter() - started
    first_epoch_times = [h["epoch_seconds"] for h in state.history]
    # Each rank counts its own shard; the DistributedSampler gives every rank the same number of rows.
    return TrainResult(
        state.best_state,
        net,
        state.history,
        state.best_epoch,
        elapsed,
        state.samples_seen * cfg.num_workers,
        cfg.num_workers,
        extra={
            "ray_init_s": ray_ready - started,
            "epoch_seconds_sum": float(sum(first_epoch_times)),
            "checkpoint_path": result.checkpoint.path,
        },
    )
