"""Training on the real parts: in-process, Ray Train with 2 workers, S3 checkpoints, a killed worker."""

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from components.core.config import TrainConfig
from components.data.validation import validate_batch
from components.learn.features import build_features
from components.learn.model import NetConfig
from components.learn.ray_train import CHECKPOINT_FILE, train_with_ray
from components.learn.train import load_state, train_in_process
from components.steps.featurize import encode


@pytest.fixture(scope="module")
def arrays(tmp_path_factory, tiny_weeks):
    import pandas as pd

    from components.core.config import ValidationConfig

    clean = pd.concat(
        [validate_batch(f, ValidationConfig(), batch=n).accepted_rows.assign(batch=n) for n, f in tiny_weeks]
    )
    splits, transform, _ = build_features(clean, 2, 2)
    out = tmp_path_factory.mktemp("arrays")
    train, val = encode(transform, splits["train"]), encode(transform, splits["val"])
    (out / "train.npz").write_bytes(train.to_bytes())
    (out / "val.npz").write_bytes(val.to_bytes())
    net = NetConfig(transform.cardinalities, len(transform.numeric), init_bias_s=float(train.y.mean()))
    return {"train": train, "val": val, "net": net, "dir": out}


def test_in_process_training_learns_and_is_seeded(arrays):
    cfg = TrainConfig(num_workers=0, epochs=3, batch_size=256)
    a = train_in_process(arrays["train"], arrays["val"], arrays["net"], cfg)
    b = train_in_process(arrays["train"], arrays["val"], arrays["net"], cfg)
    naive = float(np.mean(np.abs(arrays["val"].y - np.median(arrays["train"].y))))
    assert a.best_val_mae < 0.9 * naive
    assert a.history[-1]["val_mae_s"] == b.history[-1]["val_mae_s"]  # same seed, same result


def test_early_stopping(arrays):
    cfg = TrainConfig(num_workers=0, epochs=40, batch_size=256, patience=1, lr=0.05)
    result = train_in_process(arrays["train"], arrays["val"], arrays["net"], cfg)
    assert len(result.history) < 40
    assert result.best_epoch == int(np.argmin([h["val_mae_s"] for h in result.history]))


@pytest.mark.slow
def test_ray_two_workers_with_s3_checkpoints(arrays, s3_server):
    cfg = TrainConfig(num_workers=2, epochs=3, batch_size=256)
    result = train_with_ray(str(arrays["dir"] / "train.npz"), str(arrays["dir"] / "val.npz"), arrays["net"], cfg,
                            "s3://st-checkpoints/ray", "two-workers")
    assert result.num_workers == 2 and len(result.history) == 3
    assert result.extra["checkpoint_path"].startswith("st-checkpoints/ray/two-workers")
    from components.core.storage import Storage

    assert any(p.endswith("state.pt") for p in Storage().list("s3://st-checkpoints/ray/two-workers"))
    reference = train_in_process(
        arrays["train"], arrays["val"], arrays["net"], cfg.model_copy(update={"num_workers": 0})
    )
    assert result.best_val_mae == pytest.approx(reference.best_val_mae, rel=0.15)


@pytest.mark.slow
def test_killed_worker_resumes_from_checkpoint(arrays, tmp_path):
    cfg = TrainConfig(num_workers=2, epochs=4, batch_size=256, max_failures=2, patience=10)
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    ckpt = tmp_path / "ckpt"
    killed: dict = {}

    def killer():
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            # Ray has registered the first epoch's checkpoint (a state.pt alone may not be reported yet,
            # and a kill before then restarts from scratch).
            done = [f for f in ckpt.rglob("checkpoint_manager_snapshot.json")
                    if json.loads(f.read_text() or "{}").get("latest_checkpoint_result") is not None]
            pid_file = pid_dir / "rank1.pid"
            if done and pid_file.exists():
                pid = int(pid_file.read_text())
                os.kill(pid, signal.SIGKILL)
                killed["pid"] = pid
                return
            time.sleep(0.2)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    result = train_with_ray(str(arrays["dir"] / "train.npz"), str(arrays["dir"] / "val.npz"), arrays["net"], cfg,
                            str(ckpt), "killed", pid_dir=str(pid_dir), slow_epoch_s=1.5)
    thread.join(timeout=5)
    assert "pid" in killed, "the worker was never killed"
    assert int((pid_dir / "rank1.pid").read_text()) != killed["pid"], "a new worker took over"
    epochs = [h["epoch"] for h in result.history]
    assert epochs == sorted(set(epochs)) and epochs[-1] == 3, f"resumed, not restarted: {epochs}"
    resumed = load_state(Path(result.extra["checkpoint_path"]) / CHECKPOINT_FILE).resumed
    assert resumed is not None and resumed > 0, f"the final checkpoint says it resumed at epoch {resumed}"
    reference = train_in_process(
        arrays["train"], arrays["val"], arrays["net"], cfg.model_copy(update={"num_workers": 0})
    )
    assert result.best_val_mae == pytest.approx(reference.best_val_mae, rel=0.15)
    assert Path(result.extra["checkpoint_path"]).exists()
