"""Training: one epoch loop, run in-process here or on Ray Train workers (``components.learn.ray_train``).

``fit_loop`` holds the whole training logic (epochs, early stopping, best
state, resume). The in-process path calls it directly; the Ray path calls it
inside ``TorchTrainer`` workers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from components.core.config import Config, TrainConfig
from components.learn.features import Arrays as Arrays  # encoded splits: defined beside the features, torch-free
from components.learn.model import (
    NetConfig,
    ServiceTimeNet,
    drop_categories,
    huber_loss,
    predict_seconds,
)

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    state_dict: dict[str, torch.Tensor]
    net: NetConfig
    history: list[dict[str, float]]
    best_epoch: int
    seconds: float
    samples_seen: int
    num_workers: int
    resumed_from_epoch: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def samples_per_s(self) -> float:
        return self.samples_seen / self.seconds if self.seconds else 0.0

    @property
    def best_val_mae(self) -> float:
        return min(h["val_mae_s"] for h in self.history)


@dataclass
class LoopState:
    """Everything a checkpoint holds: enough to resume exactly where training stopped."""

    epoch: int = 0  # next epoch to run
    model: dict | None = None
    optimizer: dict | None = None
    best_state: dict | None = None
    best_val: float = float("inf")
    best_epoch: int = -1
    bad_epochs: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    samples_seen: int = 0
    resumed: int | None = None  # the epoch a restart resumed at (None: never restarted)


def save_state(state: LoopState, path: Path) -> None:
    """A checkpoint as plain containers of tensors and numbers: loadable with ``weights_only=True``."""
    torch.save(asdict(state), path)


def load_state(path: Path) -> LoopState:
    """The inverse of ``save_state``; never unpickles arbitrary objects (a checkpoint may come from S3)."""
    return LoopState(**torch.load(path, weights_only=True))


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def fit_loop(
    model: torch.nn.Module,
    loader: DataLoader,
    val: Arrays,
    cfg: TrainConfig,
    state: LoopState,
    on_epoch: Callable[[LoopState, dict[str, float]], None],
    should_stop: Callable[[bool], bool] = lambda stop: stop,
    set_epoch: Callable[[int], None] = lambda epoch: None,
) -> LoopState:
    """Train until ``cfg.epochs`` or early stopping; ``on_epoch`` checkpoints/reports."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if state.model is not None:
        _unwrap(model).load_state_dict(state.model)
        optimizer.load_state_dict(state.optimizer)
    for epoch in range(state.epoch, cfg.epochs):
        set_epoch(epoch)
        model.train()
        started, total, n = time.perf_counter(), 0.0, 0
        for cats, nums, y in loader:
            optimizer.zero_grad(set_to_none=True)
            loss = huber_loss(model(drop_categories(cats, cfg.category_dropout), nums), y, cfg.huber_delta_s)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(y)
            n += len(y)
        pred = predict_seconds(_unwrap(model), val.cats, val.nums).numpy()
        val_mae = float(np.mean(np.abs(pred - val.y)))
        metrics = {"epoch": epoch, "train_loss": total / max(n, 1), "val_mae_s": val_mae,
                   "epoch_seconds": time.perf_counter() - started, "samples": n}
        state.samples_seen += n
        state.history.append(metrics)
        if val_mae < state.best_val:
            state.best_val, state.best_epoch, state.bad_epochs = val_mae, epoch, 0
            state.best_state = {k: v.detach().clone() for k, v in _unwrap(model).state_dict().items()}
        else:
            state.bad_epochs += 1
        state.epoch = epoch + 1
        state.model = _unwrap(model).state_dict()
        state.optimizer = optimizer.state_dict()
        on_epoch(state, metrics)
        if should_stop(state.bad_epochs >= cfg.patience):
            log.info("early stopping after epoch %d (best %d)", epoch, state.best_epoch)
            break
    return state


class ShuffledBatches(Dataset):
    """A dataset whose items are whole mini-batches: index i is the i-th slice of a permutation.

    Indexing one sample at a time and collating cost about half of every epoch;
    slicing a batch at once costs a few percent. The permutation is redrawn each
    epoch (``reshuffle``); a DataLoader with ``batch_size=None`` shuffles the batch
    order, and on Ray ``prepare_data_loader``'s DistributedSampler hands each rank
    its own batches.
    """

    def __init__(self, a: Arrays, batch_size: int, seed: int):
        self.cats = torch.as_tensor(a.cats)
        self.nums = torch.as_tensor(a.nums)
        self.y = torch.as_tensor(a.y, dtype=torch.float32)
        self.batch_size, self.seed = batch_size, seed
        self.reshuffle(0)

    def reshuffle(self, epoch: int) -> None:
        self.order = torch.randperm(len(self.y), generator=torch.Generator().manual_seed(self.seed + epoch))

    def __len__(self) -> int:
        return (len(self.y) + self.batch_size - 1) // self.batch_size

    def __getitem__(self, i: int):
        idx = self.order[i * self.batch_size : (i + 1) * self.batch_size]
        return self.cats[idx], self.nums[idx], self.y[idx]


def _progress(metrics: dict[str, float]) -> None:
    log.info("epoch %d  train_loss %.4f  val_mae %.1f s  (%.1f s)", metrics["epoch"], metrics["train_loss"],
             metrics["val_mae_s"], metrics["epoch_seconds"])


def train_in_process(train: Arrays, val: Arrays, net: NetConfig, cfg: TrainConfig) -> TrainResult:
    """The ``num_workers=0`` path: same loop, no Ray, no DDP."""
    seed_everything(cfg.seed)
    model = ServiceTimeNet(net)
    batches = ShuffledBatches(train, cfg.batch_size, cfg.seed)
    loader = DataLoader(batches, batch_size=None, shuffle=True, generator=torch.Generator().manual_seed(cfg.seed))
    # One thread per worker, as on Ray: two threads on two shared cores are no faster and far
    # less steady when anything else runs.
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(cfg.cpus_per_worker)))
    started = time.perf_counter()
    try:
        state = fit_loop(model, loader, val, cfg, LoopState(), lambda s, m: _progress(m), set_epoch=batches.reshuffle)
    finally:
        torch.set_num_threads(threads)
    return TrainResult(state.best_state, net, state.history, state.best_epoch, time.perf_counter() - started,
                       state.samples_seen, 0)


def net_config(cfg: Config, transform, train: Arrays) -> NetConfig:
    """The network for a feature transform and its training arrays (embedding sizes, inputs, the mean as the
    output bias, the monotone inputs by position)."""
    import pandas as pd

    from components.core.schema import FEATURES

    monotone = tuple(transform.numeric.index(f) for f in FEATURES.monotone if f in transform.numeric)
    return NetConfig(transform.cardinalities, len(transform.numeric), cfg.train.embedding_dim, tuple(cfg.train.hidden),
                     cfg.train.dropout, float(pd.Series(train.y).mean()), monotone)
