import pytest
from pydantic import ValidationError

from components.core.config import config_with, load_config


def test_defaults_and_overrides():
    cfg = load_config(overrides={"train.epochs": 2, "eval.max_slice_regression": 0.2})
    assert cfg.train.epochs == 2 and cfg.eval.max_slice_regression == 0.2
    assert cfg.train.num_workers == 2  # the local default


def test_unknown_keys_fail_loudly(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epoch: 3\n")
    with pytest.raises(ValidationError, match="epoch"):
        load_config(bad)


def test_config_hash_tracks_content_and_json_round_trip():
    a, b = load_config(), load_config(overrides={"train.lr": 0.01})
    assert a.hash() != b.hash() and a.hash() == load_config().hash()
    assert config_with(b.model_dump_json()).train.lr == 0.01 and config_with("", {"train.epochs": 5}).train.epochs == 5
