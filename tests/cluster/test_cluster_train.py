"""The KubeRay path without a cluster: the RayJob the train step submits (validated against
KubeRay's CRD in tests/infra/test_install.py), and its entry point (the same train_with_ray, data and result
on S3) runs for real on local Ray."""

import pytest

from components.cluster.train_job import load_result, rayjob_for, stage_inputs, train_entrypoint
from components.learn.features import FeatureTransform
from components.learn.train import Arrays, net_config
from tests.conftest import tiny_config

pytestmark = pytest.mark.slow


@pytest.fixture
def features(tmp_path, tiny_weeks):
    import pandas as pd

    from components.core.config import ValidationConfig
    from components.data.validation import validate_batch
    from components.steps.featurize import featurize

    cfg = tiny_config(tmp_path / "ws", **{"train.num_workers": 1, "train.epochs": 2})
    clean = pd.concat(
        [validate_batch(f, ValidationConfig(), batch=n).accepted_rows.assign(batch=n) for n, f in tiny_weeks]
    )
    clean.to_parquet(tmp_path / "clean.parquet")
    featurize(cfg, tmp_path / "clean.parquet", tmp_path / "features")
    return cfg, tmp_path / "features"


def test_rayjob_is_valid_and_its_entrypoint_trains_from_s3(features, s3_server):
    cfg, features_dir = features
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"checkpoint_uri": "s3://st-ckpt/kuberay"})})
    transform = FeatureTransform.load(features_dir / "transform.json")
    net = net_config(cfg, transform, Arrays.from_bytes((features_dir / "train.npz").read_bytes()))
    uris = stage_inputs(cfg, features_dir, net, "run-20260101-abc")
    manifest = rayjob_for(cfg, uris, "run-20260101-abc")
    assert manifest["spec"]["entrypoint"].startswith("servicetime train --features s3://")
    workers = manifest["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    assert workers["replicas"] == cfg.train.num_workers

    result = train_entrypoint(uris["features"], uris["config"], uris["out"])
    again = load_result(uris["out"])
    assert again.best_val_mae == result.best_val_mae and len(again.history) == 2
    assert set(again.state_dict) == set(result.state_dict)
