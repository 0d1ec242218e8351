"""Retention: each kind goes after its own setting, nothing younger goes, and a dry run deletes nothing."""

import os
import time

from components.core.config import RetentionConfig
from components.data.retention import prune

DAY = 86400


def _touch(path, age_days: float, now: float):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    os.utime(path, (now - age_days * DAY, now - age_days * DAY))
    return path


def test_prune_applies_each_setting_to_its_own_kind(tmp_path):
    now = time.time()
    data, ws = tmp_path / "data", tmp_path / "ws"
    raw = [_touch(data / "raw" / f"week_{i:03d}.parquet", 400 - i, now) for i in range(6)]
    old_q, new_q = _touch(data / "quarantine" / "v1" / "b.parquet", 100, now), \
        _touch(data / "quarantine" / "live" / "c.parquet", 10, now)
    # Prediction-log partitions age by their day, whatever their write time.
    old_day = _touch(ws / "predictions" / "day=2020-01-01" / "part.parquet", 0, now)
    today = time.strftime("%Y-%m-%d", time.gmtime(now))
    new_day = _touch(ws / "predictions" / f"day={today}" / "part.parquet", 0, now)
    old_log, new_log = _touch(ws / "logs" / "run-a.log", 40, now), _touch(ws / "logs" / "run-b.log", 1, now)
    old_ckpt = _touch(ws / "checkpoints" / "run" / "epoch-1" / "state.pt", 20, now)
    cfg = RetentionConfig(raw_weeks=4, quarantine_days=90, prediction_log_days=120, run_log_days=30,
                          checkpoint_days=14)
    args = (cfg, str(data), str(ws / "predictions"), str(ws / "logs"), str(ws / "checkpoints"))

    dry = prune(*args, now=now, dry_run=True)
    assert dry.count == 6 and all(p.exists() for p in (*raw, old_q, old_day, old_log, old_ckpt))
    done = prune(*args, now=now)
    assert {k: len(v) for k, v in done.removed.items()} == {"raw": 2, "quarantine": 1, "prediction log": 1,
                                                              "run logs": 1, "checkpoints": 1}
    assert [p.exists() for p in raw] == [False, False, True, True, True, True]  # the newest 4 weeks stay
    assert not any(p.exists() for p in (old_q, old_day, old_log, old_ckpt))
    assert all(p.exists() for p in (new_q, new_day, new_log))
    assert prune(*args, now=now).count == 0  # nothing left to prune


def test_by_default_every_landing_batch_is_kept(tmp_path):
    now = time.time()
    _touch(tmp_path / "data" / "raw" / "week_000.parquet", 1000, now)
    out = prune(RetentionConfig(), str(tmp_path / "data"), str(tmp_path / "p"), str(tmp_path / "l"),
                str(tmp_path / "c"), now=now)
    assert out.removed["raw"] == [] and (tmp_path / "data" / "raw" / "week_000.parquet").exists()
