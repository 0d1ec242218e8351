"""The MLflow registry with aliases: bless, reject, rollback (SQLite store, real MLflow)."""

import pytest

from components.core.config import EvalConfig
from components.learn import tracking
from components.steps.evaluate import evaluate_step
from components.steps.register import promote_step
from components.steps.train import train_step

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Features once, then two candidates trained and registered."""
    from components.steps.featurize import featurize
    from components.steps.ingest import generate_raw, ingest
    from components.steps.validate import validate_dataset
    from tests.conftest import tiny_config

    ws = tmp_path_factory.mktemp("registry")
    cfg = tiny_config(ws, **{"train.num_workers": 0})
    root = str(ws / "data")
    generate_raw(cfg.data, root)
    version = ingest(root, ws / "ingest").data_version
    validated = validate_dataset(cfg, root, version, ws / "validate")
    featurize(cfg, ws / "validate" / "clean.parquet", ws / "features")
    first = train_step(cfg, ws / "features", ws / "m1", validated.clean_version)
    second = train_step(cfg.model_copy(update={"train": cfg.train.model_copy(update={"seed": 99})}),
                        ws / "features", ws / "m2", validated.clean_version)
    return cfg, ws, first, second


def test_every_candidate_is_registered_as_challenger_with_lineage(trained):
    cfg, _, first, second = trained
    from mlflow import MlflowClient

    assert (first.model_version, second.model_version) == ("1", "2")
    assert tracking.alias_version(cfg, tracking.CHALLENGER) == "2"
    assert tracking.alias_version(cfg, tracking.CHAMPION) is None
    run = MlflowClient().get_run(first.run_id)
    for tag in ("git_commit", "data_version", "config_hash", "seed", "pkg.torch", "pkg.ray"):
        assert run.data.tags.get(tag), tag
    assert "val_mae_s" in run.data.metrics and run.data.params["train.epochs"] == str(cfg.train.epochs)


def test_bless_reject_rollback(trained):
    cfg, ws, first, second = trained
    # First model: no champion, judged against the baseline; blessed -> champion.
    ev1 = evaluate_step(cfg, ws / "features", ws / "m1", ws / "ev1", run_id=first.run_id)
    assert ev1.blessed and ev1.champion_version is None
    promote_step(cfg, first.model_version)
    assert tracking.alias_version(cfg) == "1"
    # Second candidate under an impossible bar: not blessed, champion stays.
    strict = cfg.model_copy(update={"eval": EvalConfig(min_improvement_vs_baseline=0.99)})
    ev2 = evaluate_step(strict, ws / "features", ws / "m2", ws / "ev2", run_id=second.run_id)
    assert not ev2.blessed and ev2.champion_version == "1"
    assert any(r.startswith("FAIL beats the strongest baseline") for r in ev2.reasons)
    assert tracking.alias_version(cfg) == "1"
    assert (ws / "ev2" / "report.md").read_text().count("NOT BLESSED") == 1
    assert (ws / "ev2" / "slices.png").stat().st_size > 1000
    # Promote the second anyway, then roll back: the champion returns to version 1.
    promote_step(cfg, second.model_version)
    assert tracking.alias_version(cfg) == "2"
    assert tracking.rollback(cfg) == {"name": tracking.model_name(cfg), "from": "2", "to": "1"}
    assert tracking.alias_version(cfg) == "1"
    with pytest.raises(ValueError, match="no earlier champion"):
        tracking.rollback(cfg)


def test_rollback_command(trained, capsys):
    cfg, ws, _, _ = trained
    from components.cli.main import main

    assert main(["--workspace", cfg.workspace, "model", "rollback", "--to", "2"]) == 0
    assert "-> 2" in capsys.readouterr().out
    assert tracking.alias_version(cfg) == "2"
    assert main(["--workspace", cfg.workspace, "model", "list"]) == 0
    assert "champion" in capsys.readouterr().out
