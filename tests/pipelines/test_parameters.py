"""One channel per knob: a pipeline parameter or a config field, never both; defaults from the config;
the compiled pipeline shows each parameter with its default and description."""

import inspect
import json

import pytest
import yaml

from components.core.config import Config, config_with, load_config
from pipelines import parameters as P
from pipelines.pipeline import make_pipeline
from pipelines.submit import cluster_config, compile_cluster_pipeline, compile_pipeline


def test_the_pipeline_signature_is_the_table():
    sig = inspect.signature(make_pipeline().pipeline_func)
    assert list(sig.parameters) == [p.name for p in P.PARAMETERS]
    assert all(sig.parameters[p.name].annotation in (p.type, p.type.__name__) for p in P.PARAMETERS)


def test_knob_defaults_are_the_configs_own():
    cfg, d = load_config(), P.defaults()
    assert d["epochs"] == cfg.train.epochs and d["num_workers"] == cfg.train.num_workers
    assert d["min_improvement"] == cfg.eval.min_improvement_vs_baseline
    assert d["max_slice_regression"] == cfg.eval.max_slice_regression
    with pytest.raises(ValueError, match="no pipeline parameter"):
        P.defaults({"epoch": 3})


def test_a_config_travels_once_and_comes_back_whole():
    cfg = load_config(overrides={"train.epochs": 3, "train.num_workers": 0, "train.lr": 0.004,
                                 "eval.max_slice_regression": 0.2})
    text = P.config_json_for(cfg)
    raw = json.loads(text)
    assert (
        "epochs" not in raw["train"] and "num_workers" not in raw["train"] and "max_slice_regression" not in raw["eval"]
    )
    back = config_with(text, P.as_fields(**P.knob_values(cfg)))
    assert back == cfg


def test_a_knob_set_in_config_json_too_is_an_error_not_a_silent_loser():
    full = load_config().model_dump_json()
    with pytest.raises(ValueError, match=r"train\.epochs.*parameters"):
        config_with(full, P.as_fields(epochs=3))
    assert config_with("", P.as_fields(epochs=3)).train.epochs == 3  # empty config_json: the defaults


@pytest.mark.parametrize("cluster", [False, True])
def test_the_compiled_pipeline_shows_every_parameter_with_default_and_description(tmp_path, cluster):
    out = tmp_path / "p.yaml"
    if cluster:
        ccfg = cluster_config(load_config())
        compile_cluster_pipeline(out, ccfg)
    else:
        compile_pipeline(out)
    spec = next(yaml.safe_load_all(out.read_text()))
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert set(params) == {p.name for p in P.PARAMETERS}
    for p in P.PARAMETERS:
        assert "defaultValue" in params[p.name], p.name
        assert params[p.name]["description"].startswith(p.description.split(" (")[0][:30]), p.name
        if p.field:
            assert p.field in params[p.name]["description"]
    if cluster:  # the dashboard's config_json holds no knob, and loads as the cluster's config
        given = params["config_json"]["defaultValue"]
        assert Config.model_validate_json(given).train.backend == "kuberay"
        knobs = {name: params[name]["defaultValue"] for name in P.KNOBS}
        assert config_with(given, P.as_fields(**knobs)).train.epochs == ccfg.train.epochs
