"""Shared fixtures: tiny configs, simulated data, and a real S3 server on loopback."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml

from components.core.config import Config, load_config

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "components" / "configs" / "tiny.yaml"


def tiny_config(workspace: Path, **overrides) -> Config:
    return load_config(TINY, {"workspace": str(workspace), **overrides})


@pytest.fixture
def tiny_cfg(tmp_path: Path) -> Config:
    return tiny_config(tmp_path / "ws", **{"train.num_workers": 0})


@pytest.fixture(scope="session")
def tiny_weeks() -> list[tuple[str, pd.DataFrame]]:
    """The tiny config's weeks, generated once per session (read-only: copy before changing)."""
    from components.data.simulator import generate

    return list(generate(load_config(TINY).data))


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3 server (SeaweedFS) on a free loopback port, with credentials in the environment."""
    from components.devstack.s3server import start_s3_server

    server = start_s3_server(tmp_path_factory.mktemp("s3"))
    saved = {k: os.environ.get(k) for k in server.env()}
    os.environ.update(server.env())
    try:
        yield server
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()


@pytest.fixture(autouse=True)
def _quiet_mlflow(monkeypatch):
    monkeypatch.setenv("MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="session", autouse=True)
def _stop_ray_at_the_end():
    yield
    import sys

    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()


@pytest.fixture(scope="session")
def upstream_root() -> Path:
    """The pinned KFP, Argo and KubeRay trees: $SERVICETIME_UPSTREAM, else the cache, else a download.

    Where none of these works (a fresh clone without network) the tests that need them
    skip, saying why; nothing fails for their absence.
    """
    from components.render import upstream

    try:
        return upstream.locate(download=True)
    except upstream.UpstreamMissing as exc:
        pytest.skip(f"pinned upstream manifests unavailable: {exc}")


def kuberay_crd_schema(root: Path, kind_plural: str) -> dict:
    """The v1 openAPIV3Schema of a KubeRay CRD (``rayjobs`` or ``rayclusters``) from the pinned tree."""
    from components.render import upstream

    tree = next(t for t in upstream.trees() if t.key == "kuberay")
    path = root / tree.folder / "ray-operator" / "config" / "crd" / "bases" / f"ray.io_{kind_plural}.yaml"
    crd = yaml.safe_load(path.read_text())
    return next(v for v in crd["spec"]["versions"] if v["name"] == "v1")["schema"]["openAPIV3Schema"]


# --- tiny data and a tiny trained model, built once per session through the library's own functions ---


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
