"""Features: point-in-time history, a time-based split and the fitted transform, written for training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from components.core.config import Config
from components.core.schema import LABEL, TIMESTAMP
from components.data.drift import build_reference
from components.learn.features import (
    HISTORY_FILE,
    REFERENCE_FILE,
    SPLIT_FILE,
    TEST,
    TRAIN,
    TRAIN_FRAME,
    TRANSFORM_FILE,
    VAL,
    VAL_FRAME,
    Arrays,
    FeatureTransform,
    build_features,
)
from components.steps import record
from components.steps.outcomes import Featurized


def encode(transform: FeatureTransform, frame: pd.DataFrame) -> Arrays:
    cats, nums = transform.transform(frame)
    return Arrays(cats, nums, frame[LABEL].to_numpy(np.float32))


def featurize(cfg: Config, clean_path: str | Path, out_dir: str | Path, run_uri: str | None = None) -> Featurized:
    clean = pd.read_parquet(clean_path)
    splits, transform, snapshot = build_features(clean, cfg.split.val_weeks, cfg.split.test_weeks)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / TRAIN).write_bytes(encode(transform, splits["train"]).to_bytes())
    (out / VAL).write_bytes(encode(transform, splits["val"]).to_bytes())
    splits["test"].to_parquet(out / TEST, index=False)
    splits["train"].to_parquet(out / TRAIN_FRAME, index=False)
    splits["val"].to_parquet(out / VAL_FRAME, index=False)
    transform.save(out / TRANSFORM_FILE)
    snapshot.to_parquet(out / HISTORY_FILE, index=False)
    (out / REFERENCE_FILE).write_text(json.dumps(build_reference(splits["train"]).to_dict()))
    weeks = {k: sorted(v["batch"].unique().tolist()) for k, v in splits.items()}
    (out / SPLIT_FILE).write_text(
        json.dumps(
            {
                "weeks": weeks,
                "rows": {k: len(v) for k, v in splits.items()},
                "train_areas": sorted(splits["train"]["area_id"].astype(str).unique()),
                # The newest stop the model and its history snapshot learned from: their data's age at serving.
                "data_until": float(max(pd.to_datetime(splits[k][TIMESTAMP], utc=True).max()
                                        for k in ("train", "val")).timestamp()),
            },
            indent=1,
        )
    )
    return record(run_uri, Featurized({k: len(v) for k, v in splits.items()}, weeks["test"], str(out)))
