"""Training benchmark (not a test): Ray Train with 1 and 2 workers against the in-process loop.

    .venv/bin/python -m pytest tests/benchmarks/bench_training.py -m bench -s -p no:cacheprovider

Same data (the default config's features, built once with the pipeline steps, see
``bench_data.default_features``), same network (``learn.train.net_config``), same
``TrainConfig`` (6 epochs, patience high so every run does all 6), one process tree:

* ``in-process``: ``components.learn.train.train_in_process`` (the ``num_workers=0`` path);
* ``ray 1w`` / ``ray 2w``: ``components.learn.ray_train.train_with_ray`` on a local Ray started once
  by ``components.learn.ray_train.ensure_ray`` (its time is reported as ``ray.init``).

Figures: throughput during the epochs (samples / sum of epoch seconds; an epoch's
seconds include its validation pass), Ray's fixed overhead (total minus the sum of
epoch seconds: worker start-up, process group, data load, per-epoch checkpoint and
report, shutdown), and wall time to a target validation MAE: the first epoch whose
val MAE is within 3 % (and 1 %) of the in-process run's best, counted as overhead +
the epochs up to it (for Ray this counts all of the overhead, so it errs against Ray),
warm (Ray already up) and cold (+ ``ray.init``, what a pipeline step pays).

Goal (printed, not asserted): Ray with 2 workers within 1.2x the in-process time to target.

Then the why (``BENCH_TRAINING_INVESTIGATE=0`` skips it): in-process with one torch
thread (what each Ray worker uses), batch size 2048 in-process and on 2 Ray
workers, the cost of the library's DataLoader (per-sample ``TensorDataset`` indexing +
default collate) against whole-batch indexing, the gloo all-reduce latency for the
model's gradient, and the same loop (``components.learn.train.fit_loop``) fed by a
whole-batch loader, in-process and on 2 Ray workers.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pytest

from tests.benchmarks.bench_data import default_features
from tests.benchmarks.results import goal, print_table, ratio, record

EPOCHS = int(os.environ.get("BENCH_TRAIN_EPOCHS", "6"))
INVESTIGATE = os.environ.get("BENCH_TRAINING_INVESTIGATE", "1") != "0"
GOAL_RATIO = 1.2
TARGETS = {"3%": 1.03, "1%": 1.01}



def _tensors(a):
    """Per-sample TensorDataset: the loader the library used before ShuffledBatches (for comparison)."""
    import torch
    from torch.utils.data import TensorDataset

    return TensorDataset(torch.as_tensor(a.cats), torch.as_tensor(a.nums), torch.as_tensor(a.y, dtype=torch.float32))

def train_cfg(**overrides):
    from components.core.config import TrainConfig

    return TrainConfig(**{"epochs": EPOCHS, "patience": 100, **overrides})


# --- a whole-batch loader (what the investigation proposes) ------------------------------------


def batch_loader(train, batch_size: int, seed: int, sampler=None):
    """DataLoader that indexes the tensors once per batch (no per-sample __getitem__ + collate)."""
    import torch
    from torch.utils.data import BatchSampler, DataLoader, RandomSampler


    ds = _tensors(train)
    sampler = sampler or RandomSampler(ds, generator=torch.Generator().manual_seed(seed))
    return DataLoader(ds, sampler=BatchSampler(sampler, batch_size, drop_last=False), batch_size=None)


def _ray_worker_batched(config: dict) -> None:
    """The library's Ray worker (components.learn.ray_train._ray_worker) with a whole-batch loader,
    nothing else changed.

    Rank 0 also writes wall-clock marks (entry, ready to train, each epoch's end and report) to
    ``config["marks"]`` so the driver can split Ray's fixed overhead into its parts.
    """
    import json
    import tempfile as tmpmod

    import ray.train
    import ray.train.torch
    import torch
    import torch.distributed as dist
    from torch.utils.data import DistributedSampler

    from components.core.config import TrainConfig
    from components.core.storage import Storage
    from components.learn.model import NetConfig, ServiceTimeNet
    from components.learn.ray_train import CHECKPOINT_FILE
    from components.learn.train import Arrays, LoopState, fit_loop, seed_everything

    marks: dict = {"entry": time.time(), "epoch_end": [], "reported": []}
    torch.set_num_threads(1)
    cfg = TrainConfig.model_validate(config["train"])
    net = NetConfig.from_dict(config["net"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    storage = Storage()
    train = Arrays.from_bytes(storage.read_bytes(config["train_uri"]))
    val = Arrays.from_bytes(storage.read_bytes(config["val_uri"]))
    seed_everything(cfg.seed)
    model = ray.train.torch.prepare_model(ServiceTimeNet(net))
    sampler = DistributedSampler(_tensors(train), num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed)
    loader = batch_loader(train, cfg.batch_size, cfg.seed, sampler=sampler)
    marks["ready"] = time.time()

    def on_epoch(s: LoopState, metrics: dict) -> None:
        marks["epoch_end"].append(time.time())
        with tmpmod.TemporaryDirectory() as tmp:
            ckpt = None
            if rank == 0:
                torch.save(s, Path(tmp) / CHECKPOINT_FILE)
                ckpt = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report({**metrics, "best_val_mae_s": s.best_val}, checkpoint=ckpt)
        marks["reported"].append(time.time())

    def should_stop(stop: bool) -> bool:
        flag = torch.tensor([1.0 if stop else 0.0])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    fit_loop(model, loader, val, cfg, LoopState(), on_epoch, should_stop, sampler.set_epoch)
    marks["exit"] = time.time()
    if rank == 0:
        Path(config["marks"]).write_text(json.dumps(marks))


def fit_ray_batched(feats, net, cfg, storage_path: str, name: str) -> dict:
    import json

    import ray.train
    from ray.train.torch import TorchTrainer

    from components.learn.ray_train import CHECKPOINT_FILE
    from components.learn.train import load_state

    marks_file = Path(storage_path) / f"{name}-marks.json"
    started, fit_start = time.perf_counter(), time.time()
    trainer = TorchTrainer(
        _ray_worker_batched,
        train_loop_config={
            "train": cfg.model_dump(),
            "net": net.to_dict(),
            "train_uri": feats.train_uri,
            "val_uri": feats.val_uri,
            "marks": str(marks_file),
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.num_workers, resources_per_worker={"CPU": cfg.cpus_per_worker}
        ),
        torch_config=ray.train.torch.TorchConfig(backend="gloo"),
        run_config=ray.train.RunConfig(
            name=name, storage_path=storage_path, checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2)
        ),
    )
    result = trainer.fit()
    fit_end = time.time()
    if result.error:
        raise RuntimeError(f"Ray training failed: {result.error}")
    with result.checkpoint.as_directory() as d:
        state = load_state(Path(d) / CHECKPOINT_FILE)
    m = json.loads(marks_file.read_text())
    epoch_starts = [m["ready"], *m["reported"][:-1]]
    phases = {
        "fit() to worker entry (worker group, placement group, process group)": m["entry"] - fit_start,
        "worker entry to first batch (imports, data load, DDP wrap)": m["ready"] - m["entry"],
        "epochs (train + val)": sum(e - s for s, e in zip(epoch_starts, m["epoch_end"])),
        "checkpoint + report, all epochs": sum(r - e for e, r in zip(m["epoch_end"], m["reported"])),
        "worker exit to fit() return (shutdown)": fit_end - m["exit"],
        "fit() start to first report": m["reported"][0] - fit_start,
        "fit() total": fit_end - fit_start,
    }
    return {"history": state.history, "seconds": time.perf_counter() - started,
            "samples": state.samples_seen * cfg.num_workers, "phases": phases}


# --- microbenchmarks --------------------------------------------------------------------------


def loader_costs(feats, batch_sizes=(512, 2048)) -> list[dict]:
    """One epoch of the library's loader vs a whole-batch loader, and the model step alone (1 thread)."""
    import torch
    from torch.utils.data import DataLoader

    from components.learn.model import ServiceTimeNet, huber_loss

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = []
        for bs in batch_sizes:
            gen = torch.Generator().manual_seed(13)
            # Per-sample indexing, as train.py used to build it.
            library = DataLoader(_tensors(feats.train), batch_size=bs, shuffle=True, generator=gen)
            started = time.perf_counter()
            steps = sum(1 for _ in library)
            t_library = time.perf_counter() - started
            started = time.perf_counter()
            batches = list(batch_loader(feats.train, bs, 13))
            t_batched = time.perf_counter() - started
            model = ServiceTimeNet(feats.net())
            opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
            started = time.perf_counter()
            for cats, nums, y in batches:
                opt.zero_grad(set_to_none=True)
                loss = huber_loss(model(cats, nums), y, 90.0)
                loss.backward()
                opt.step()
                loss.item()
            t_compute = time.perf_counter() - started
            out.append({"batch": bs, "steps/epoch": steps, "library loader s/epoch": t_library,
                        "whole-batch loader s/epoch": t_batched, "model steps s/epoch": t_compute,
                        "loader share of epoch": t_library / (t_library + t_compute),
                        "loader ms/step": 1000 * t_library / steps, "model ms/step": 1000 * t_compute / steps,
                        "params": sum(p.numel() for p in model.parameters())})
        return out
    finally:
        torch.set_num_threads(threads)


def _allreduce_rank(rank: int, port: int, numel: int, n: int) -> float:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        t = torch.zeros(numel)
        for _ in range(20):
            dist.all_reduce(t)
        dist.barrier()
        started = time.perf_counter()
        for _ in range(n):
            dist.all_reduce(t)
        return (time.perf_counter() - started) / n
    finally:
        dist.destroy_process_group()


def allreduce_latency_ms(numel: int, n: int = 300) -> float:
    """gloo all-reduce of one gradient-sized float32 tensor between 2 local processes (no Ray)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_allreduce_rank, r, port, numel, n) for r in range(2)]
        return 1000 * max(f.result(timeout=120) for f in futures)


# --- the benchmark ---------------------------------------------------------------------------


def _row(name: str, workers: int, batch: int, threads, history: list[dict], seconds: float, samples: int,
         extra_init: float = 0.0) -> dict:
    epoch_s = [h["epoch_seconds"] for h in history]
    overhead = seconds - sum(epoch_s)
    return {"run": name, "workers": workers, "batch": batch, "threads/worker": threads, "epochs": len(history),
            "best val MAE s": min(h["val_mae_s"] for h in history), "mean epoch s": float(np.mean(epoch_s)),
            "samples/s (epochs)": samples / sum(epoch_s), "total s": seconds, "overhead s": overhead,
            "ray.init s": extra_init or None, "val_mae_by_epoch": [round(h["val_mae_s"], 2) for h in history],
            "epoch_seconds": [round(s, 3) for s in epoch_s]}


def _time_to_target(row: dict, target: float) -> float | None:
    for k, mae in enumerate(row["val_mae_by_epoch"]):
        if mae <= target:
            return row["overhead s"] + sum(row["epoch_seconds"][: k + 1])
    return None


def _ray_row(result, name: str, batch: int) -> dict:
    return _row(name, result.num_workers, batch, 1, result.history, result.seconds, result.samples_seen)


@pytest.mark.bench
def test_bench_training():
    import torch

    from components.learn.ray_train import ensure_ray, train_with_ray
    from components.learn.train import train_in_process

    wall = time.perf_counter()
    load_before = os.getloadavg()
    feats = default_features()
    net = feats.net()
    ckpt_dir = tempfile.mkdtemp(prefix="servicetime-bench-ckpt-")
    rows: list[dict] = []
    investigation: dict = {}
    default_threads = torch.get_num_threads()
    started_ray = False
    try:
        r = train_in_process(feats.train, feats.val, net, train_cfg(num_workers=0))
        rows.append(_row("in-process", 0, 512, default_threads, r.history, r.seconds, r.samples_seen))

        import ray

        ray_init_s = None
        if not ray.is_initialized():
            started = time.perf_counter()
            ensure_ray(2)
            ray_init_s = time.perf_counter() - started
            started_ray = True
        for workers in (1, 2):
            r = train_with_ray(feats.train_uri, feats.val_uri, net, train_cfg(num_workers=workers), ckpt_dir,
                               f"bench-{workers}w-{int(time.time())}")
            rows.append(_ray_row(r, f"ray {workers}w", 512))

        if INVESTIGATE:
            # In-process variants run with one torch thread (as each Ray worker does), one change at a time.
            from components.learn.model import ServiceTimeNet
            from components.learn.train import LoopState, fit_loop, seed_everything

            torch.set_num_threads(1)
            try:
                r = train_in_process(feats.train, feats.val, net, train_cfg(num_workers=0))
                rows.append(_row("in-process, 1 thread", 0, 512, 1, r.history, r.seconds, r.samples_seen))
                r = train_in_process(feats.train, feats.val, net, train_cfg(num_workers=0, batch_size=2048))
                rows.append(_row("in-process, 1 thread, batch 2048", 0, 2048, 1, r.history, r.seconds, r.samples_seen))
                cfg = train_cfg(num_workers=0)
                seed_everything(cfg.seed)
                started = time.perf_counter()
                state = fit_loop(ServiceTimeNet(net), batch_loader(feats.train, cfg.batch_size, cfg.seed), feats.val,
                                 cfg, LoopState(), lambda s, m: None)
                rows.append(_row("in-process, 1 thread, whole-batch loader", 0, 512, 1, state.history,
                                 time.perf_counter() - started, state.samples_seen))
            finally:
                torch.set_num_threads(default_threads)
            r = train_with_ray(feats.train_uri, feats.val_uri, net, train_cfg(num_workers=2, batch_size=2048), ckpt_dir,
                               f"bench-2w-2048-{int(time.time())}")
            rows.append(_ray_row(r, "ray 2w, batch 2048", 2048))
            b = fit_ray_batched(feats, net, train_cfg(num_workers=2), ckpt_dir, f"bench-2w-batched-{int(time.time())}")
            rows.append(_row("ray 2w, whole-batch loader", 2, 512, 1, b["history"], b["seconds"], b["samples"]))
            investigation["ray_phases_s"] = b["phases"]

            investigation["loader"] = loader_costs(feats)
            investigation["allreduce_ms"] = allreduce_latency_ms(investigation["loader"][0]["params"])
    finally:
        if started_ray:
            import ray

            ray.shutdown()
        shutil.rmtree(ckpt_dir, ignore_errors=True)

    base = rows[0]
    best = base["best val MAE s"]
    for row in rows:
        for label, factor in TARGETS.items():
            t = _time_to_target(row, best * factor)
            row[f"to target {label} s"] = t
            cold = t + ray_init_s if (t is not None and row["workers"] and ray_init_s) else t
            row[f"to target {label} cold s"] = cold
        row["throughput vs in-process"] = ratio(row["samples/s (epochs)"], base["samples/s (epochs)"])
        row["to target 3% vs in-process"] = ratio(row["to target 3% s"], base["to target 3% s"])
        row["to target 3% cold vs in-process"] = ratio(row["to target 3% cold s"], base["to target 3% s"])
        row["total vs in-process"] = ratio(row["total s"], base["total s"])
        if row["workers"]:
            row["ray.init s"] = ray_init_s

    print_table(f"training: {len(feats.train):,} train rows, {EPOCHS} epochs, target val MAE = in-process best "
                f"{best:.1f} s x 1.03 / 1.01", rows,
                ["run", "workers", "batch", "threads/worker", "best val MAE s", "mean epoch s", "samples/s (epochs)",
                 "throughput vs in-process", "total s", "overhead s", "to target 3% s", "to target 3% cold s",
                 "to target 3% cold vs in-process", "to target 1% s", "total vs in-process"])
    print(f"ray.init (local, 2 CPUs): {ray_init_s:.1f} s" if ray_init_s else "ray.init: Ray was already running")
    for row in rows:
        print(f"  {row['run']:<42} val MAE by epoch {row['val_mae_by_epoch']}  epoch s {row['epoch_seconds']}")
    if investigation:
        print_table("training: where Ray's time goes (ray 2w, whole-batch loader; wall-clock marks from rank 0)",
                    [{"phase": k, "seconds": v} for k, v in investigation["ray_phases_s"].items()])
        print_table("training: where an epoch goes (one thread, one process)", investigation["loader"])
        steps2 = investigation["loader"][0]["steps/epoch"] / 2
        print(f"gloo all-reduce of the gradient ({investigation['loader'][0]['params']:,} floats) between 2 local "
              f"processes: {investigation['allreduce_ms']:.2f} ms per step; x {steps2:.0f} steps per worker per epoch "
              f"= {investigation['allreduce_ms'] * steps2 / 1000:.2f} s per epoch at batch 512")

    ray2 = next(r for r in rows if r["run"] == "ray 2w")
    one_thread = next((r for r in rows if r["run"] == "in-process, 1 thread"), None)
    if one_thread:
        t1 = one_thread["to target 3% s"]
        print(
            f"against in-process with 1 torch thread (to target 3% {t1:.1f} s, "
            f"{one_thread['samples/s (epochs)']:,.0f} samples/s): ray 2w to target "
            f"{ratio(ray2['to target 3% cold s'], t1):.1f}x cold, {ratio(ray2['to target 3% s'], t1):.1f}x warm; "
            f"in-process default ({default_threads} threads) {ratio(base['to target 3% s'], t1):.1f}x, "
            "epoch throughput "
            f"{ratio(base['samples/s (epochs)'], one_thread['samples/s (epochs)']):.2f}x"
        )
    goals = []
    for label, key in (("cold (incl. ray.init)", "to target 3% cold vs in-process"),
                       ("warm (Ray already up)", "to target 3% vs in-process")):
        x = ray2[key]
        goals.append(goal(f"ray 2 workers time to target (3%) within {GOAL_RATIO}x in-process, {label}",
                          x is not None and x <= GOAL_RATIO, f"{x:.2f}x" if x is not None else "target not reached"))
    record("training", {"runs": rows, "ray_init_s": ray_init_s, "investigation": investigation, "goals": goals,
                        "epochs": EPOCHS, "train_rows": len(feats.train), "val_rows": len(feats.val),
                        "load_average_before": load_before, "wall_s": time.perf_counter() - wall})
    print(f"training benchmark wall time {time.perf_counter() - wall:.1f} s")
    for row in rows:  # correctness: every run learned (far better than predicting the mean)
        naive = float(np.mean(np.abs(feats.val.y - feats.train.y.mean())))
        assert row["best val MAE s"] < 0.8 * naive, row["run"]
