"""The tuned-settings overlay that ``train`` applies, and the search space's encoding."""

import json

import pytest
from pydantic import ValidationError

from components.core.config import load_config
from components.learn.tune import apply_tuned, best_path, defaults_point, load_tuned, to_settings


def _write(cfg, settings, **extra):
    path = best_path(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"settings": settings, "provenance": {"trials": 4}, **extra}))
    return path


def test_no_best_file_leaves_the_config_alone(tmp_path):
    cfg = load_config(overrides={"workspace": str(tmp_path)})
    assert apply_tuned(cfg) == (cfg, None, None)


def test_best_file_overlays_only_its_fields(tmp_path):
    cfg = load_config(overrides={"workspace": str(tmp_path), "train.epochs": 5})
    path = _write(cfg, {"lr": 0.0123, "hidden": [64, 32], "batch_size": 128})
    tuned, settings, used = apply_tuned(cfg)
    assert used == path and settings == {"lr": 0.0123, "hidden": [64, 32], "batch_size": 128}
    assert (tuned.train.lr, tuned.train.hidden, tuned.train.batch_size) == (0.0123, [64, 32], 128)
    assert tuned.train.epochs == 5 and tuned.train.dropout == cfg.train.dropout  # the rest as configured
    assert cfg.train.lr != 0.0123  # the caller's config is not changed


def test_use_tuned_false_ignores_the_file(tmp_path):
    cfg = load_config(overrides={"workspace": str(tmp_path), "train.use_tuned": False})
    _write(cfg, {"lr": 0.0123})
    assert apply_tuned(cfg) == (cfg, None, None)


def test_bad_best_files_fail_loudly(tmp_path):
    cfg = load_config(overrides={"workspace": str(tmp_path)})
    with pytest.raises(ValueError, match="not TrainConfig fields: learning_rate"):
        load_tuned(_write(cfg, {"learning_rate": 0.01}))
    with pytest.raises(ValidationError):
        load_tuned(_write(cfg, {"batch_size": 2}))  # below the field's minimum
    with pytest.raises(ValueError, match="no 'settings'"):
        load_tuned(_write(cfg, {}))


def test_defaults_point_round_trips_to_the_configured_settings():
    train = load_config().train
    settings = to_settings(defaults_point(train))
    assert settings == {k: getattr(train, k) for k in settings}
