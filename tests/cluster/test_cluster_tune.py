"""The search on the cluster without a cluster: the RayJob the tune step submits, and its entry point
(`servicetime tune --features ...`, parsed by the real CLI) searching on staged S3 inputs on local Ray."""

import shlex

import pytest

from components.cli.main import main
from components.cluster.train_job import stage_inputs
from components.cluster.tune_job import TRIALS_FILE, rayjob_for
from components.core.storage import Storage, join
from components.learn.features import FeatureTransform
from components.learn.train import Arrays, net_config
from tests.cluster.test_cluster_train import features  # noqa: F401 (the shared fixture)

pytestmark = pytest.mark.slow


def test_tune_rayjob_entrypoint_searches_from_s3(features, s3_server):  # noqa: F811
    cfg, features_dir = features
    transform = FeatureTransform.load(features_dir / "transform.json")
    net = net_config(cfg, transform, Arrays.from_bytes((features_dir / "train.npz").read_bytes()))
    uris = stage_inputs(cfg, features_dir, net, "run-20260101-tune")
    manifest = rayjob_for(cfg, uris, "run-20260101-tune", trials=2)
    assert manifest["metadata"]["name"].startswith("tune-")
    argv = shlex.split(manifest["spec"]["entrypoint"])
    assert argv[:2] == ["servicetime", "tune"] and "--trials" in argv

    assert main(argv[1:]) == 0  # what the RayJob's driver runs, through the same parser
    trials = Storage().read_json(join(uris["out"], TRIALS_FILE))
    assert [t["trial"] for t in trials] == [0, 1]
    assert all(1 <= t["epochs"] <= cfg.train.epochs and t["best_val_mae_s"] > 0 for t in trials)
    assert trials[0]["settings"]["lr"] == cfg.train.lr  # trial 0 is the defaults
