"""Tiny data and a tiny trained model, built once per session through the library's own functions."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pytest

from components.core.config import Config, load_config
from tests.conftest import TINY


@dataclass
class TinySplit:
    cfg: Config
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    transform: object
    snapshot: pd.DataFrame


@pytest.fixture(scope="session")
def tiny_split(tiny_weeks) -> TinySplit:
    """The tiny weeks, validated (faulty rows quarantined), with point-in-time history, split by week."""
    from components.data.validation import validate_batch
    from components.learn.features import build_features

    cfg = load_config(TINY, {"train.num_workers": 0})
    frames = []
    for name, frame in tiny_weeks:
        result = validate_batch(frame.copy(), cfg.validation, batch=name)
        frames.append(result.accepted_rows.assign(batch=name))
    splits, transform, snapshot = build_features(pd.concat(frames, ignore_index=True), cfg.split.val_weeks,
                                                 cfg.split.test_weeks)
    return TinySplit(cfg, splits["train"], splits["val"], splits["test"], transform, snapshot)


@pytest.fixture(scope="session")
def tiny_predictor(tiny_split, tmp_path_factory):
    """A model trained in-process on the tiny weeks (a few seconds), calibrated on their validation weeks."""
    from components.data.drift import build_reference
    from components.learn.bundle import Predictor, calibrate_bundle, save_bundle
    from components.learn.train import net_config, train_in_process
    from components.steps.featurize import encode

    s = tiny_split
    cfg = s.cfg.model_copy(update={"train": s.cfg.train.model_copy(update={"epochs": 6})})
    train, val = encode(s.transform, s.train), encode(s.transform, s.val)
    result = train_in_process(train, val, net_config(cfg, s.transform, train), cfg.train)
    out = tmp_path_factory.mktemp("tiny-bundle")
    save_bundle(out, result.state_dict, result.net, s.transform, s.snapshot, build_reference(s.train), {"run_id": "t"})
    calibrate_bundle(out, s.val, cfg.calibration)
    return Predictor.load(out)
