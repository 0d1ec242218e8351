"""The pipeline's tune step when tuning is off, and the train step's overlay of what it returns."""

import json

from components.core.config import config_with
from components.learn.tune import defaults_point, to_settings
from components.steps.tune import tune_step
from pipelines.parameters import config_json_for


def test_tune_step_off_returns_no_settings_and_records_it(tmp_path):
    run_uri = str(tmp_path / "run")
    out = tune_step(config_with(""), tmp_path / "no-features", 0, "abc", run_uri)
    assert out.trials == 0 and out.settings_json == ""
    assert json.loads((tmp_path / "run" / "steps" / "tune.json").read_text()) == out.record()


def test_best_settings_json_round_trips_through_the_train_ops_overlay():
    cfg = config_with("")
    settings = to_settings(defaults_point(cfg.train)) | {"lr": 0.004, "hidden": [64, 32]}
    tuned = {f"train.{k}": v for k, v in json.loads(json.dumps(settings)).items()}
    out = config_with(config_json_for(cfg), {"train.epochs": 3}, tuned=tuned)
    assert out.train.lr == 0.004 and list(out.train.hidden) == [64, 32] and out.train.epochs == 3
