"""Chaos scenarios in deployment and serving: a worse canary, the champion's model file deleted."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from components.core.config import Config
from components.labs.chaos_base import (
    Champion,
    Check,
    Context,
    registered_champion,
    stored_files,
)


def _register_untrained(champ: Champion, ctx: Context) -> str:
    """A new version whose weights are a freshly initialised network: the export wrote the wrong state."""
    import mlflow
    import torch

    from components.learn import tracking
    from components.learn.bundle import NET, WEIGHTS
    from components.learn.model import NetConfig, ServiceTimeNet

    bundle = ctx.workspace / "steps" / "model-v2"
    shutil.copytree(champ.bundle, bundle)
    torch.manual_seed(champ.cfg.train.seed)
    net = NetConfig.from_dict(json.loads((bundle / NET).read_text()))
    torch.save(ServiceTimeNet(net).state_dict(), bundle / WEIGHTS)
    tracking.setup(champ.cfg)
    with mlflow.start_run(run_name="chaos-untrained-export"):
        version = tracking.register(champ.cfg, tracking.log_model(bundle), tags={"chaos": "untrained weights"})
    return version


def worse_canary(ctx: Context) -> list[Check]:
    """A promoted version is worse than its evaluation said: the local canary check fails and rolls back."""
    import pandas as pd

    from components.learn import tracking
    from components.learn.bundle import Predictor
    from components.learn.features import TEST
    from components.steps.deploy import DeployFailed, canary_check, deploy_step
    from components.steps.register import promote_step

    champ = registered_champion(ctx)
    cfg = champ.cfg
    test = pd.read_parquet(champ.features / TEST)
    evaluated = canary_check(Predictor.load(champ.bundle), test, float("inf"), 0.0)["mae"]
    good = deploy_step(cfg, champ.features, evaluated)
    ctx.say(f"version {champ.version} passes its canary: MAE {good.details['mae']:.1f} s (evaluated {evaluated:.1f} s)")
    bad = _register_untrained(champ, ctx)
    promote_step(cfg, bad)
    ctx.say(f"version {bad} promoted (its bundle holds untrained weights); deploying it")
    bad_mae = canary_check(Predictor.load(ctx.workspace / "steps" / "model-v2"), test, evaluated, 0.0)["mae"]
    try:
        deploy_step(cfg, champ.features, evaluated)
        failed = Check("the canary of the worse version fails", False, "deploy_step accepted it")
    except DeployFailed as exc:
        failed = Check("the canary of the worse version fails", f"version {bad}" in str(exc), str(exc)[:300])
    after = tracking.alias_version(cfg, tracking.CHAMPION)
    return [
        Check(
            "the good version passes the same canary",
            not good.details["problems"],
            f"version {champ.version}: MAE {good.details['mae']:.1f} s vs evaluated {evaluated:.1f} s",
        ),
        failed,
        Check(
            "the worse version is clearly worse",
            bad_mae > evaluated * (1 + cfg.deploy.mae_tolerance),
            f"version {bad}: MAE {bad_mae:.1f} s vs evaluated {evaluated:.1f} s "
            f"(tolerance {cfg.deploy.mae_tolerance:.0%})",
        ),
        Check("the champion alias is back on the good version", after == champ.version, f"champion -> version {after}"),
    ]


def _serve(ctx: Context, cfg: Config, port: int, log: Path) -> subprocess.Popen:
    import yaml

    from components.learn import tracking

    config_file = ctx.workspace / "serve-config.yaml"
    config_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    cmd = [sys.executable, "-m", "components.serving", "--config", str(config_file), "--workspace", str(ctx.workspace),
           "serve", "--host", "127.0.0.1", "--port", str(port), "--reload-interval", "2",
           "--model-uri", f"models:/{tracking.model_name(cfg)}@{tracking.CHAMPION}"]
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ctx.workspace, start_new_session=True)


def _ready(url: str, proc: subprocess.Popen, timeout_s: float = 120.0) -> dict:
    """/readyz once the server answers (it answers after its first load attempt)."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the model server exited with {proc.returncode}")
        try:
            r = httpx.get(f"{url}/readyz", timeout=2.0)
            return {"status": r.status_code, **r.json()}
        except httpx.HTTPError:
            time.sleep(0.5)
    raise TimeoutError(f"the model server did not answer at {url} within {timeout_s:.0f} s")


def _sources(url: str, stops: list[dict]) -> list[str]:
    import httpx

    r = httpx.post(f"{url}/predict", json={"stops": stops}, timeout=30.0)
    r.raise_for_status()
    return [p["source"] for p in r.json()["predictions"]]


def champion_file_deleted(ctx: Context) -> list[Check]:
    """The champion's model file is deleted from the registry's store; the server restarts (a new pod)."""
    import pandas as pd

    from components.devstack.process import free_port, stop_process_group
    from components.learn.bundle import WEIGHTS
    from components.learn.features import TEST
    from components.serving.api import FIELD_NAMES

    champ = registered_champion(ctx)
    test = pd.read_parquet(champ.features / TEST)
    stops = json.loads(test[list(FIELD_NAMES)].head(5).to_json(orient="records", date_format="iso"))
    port, log = free_port(), ctx.workspace / "model-server.log"
    url = f"http://127.0.0.1:{port}"
    proc = _serve(ctx, champ.cfg, port, log)
    try:
        first = _ready(url, proc)
        before = _sources(url, stops)
        files = sorted(stored_files(champ.cfg, champ.name, champ.version).rglob(WEIGHTS))
        for f in files:
            f.unlink()
        ctx.say(f"deleted {len(files)} {WEIGHTS} file(s) of version {champ.version} from the registry's store")
        held = _sources(url, stops)  # the running server keeps the model it loaded
    finally:
        stop_process_group(proc.pid, 10.0)
    ctx.say("model server restarted")
    proc = _serve(ctx, champ.cfg, port, log)
    try:
        after = _ready(url, proc)
        fallback = _sources(url, stops)
    finally:
        stop_process_group(proc.pid, 10.0)
    reason = str(after.get("reason", ""))
    return [
        Check(
            "before: the server answers from the champion",
            first["status"] == 200 and set(before) == {"model"},
            f"/readyz {first['status']} version {first.get('version')}; sources {sorted(set(before))}",
        ),
        Check("the file is gone from the registry's store", bool(files), f"{[str(f) for f in files][:2]}"),
        Check(
            "the running server keeps the model it had loaded", set(held) == {"model"}, f"sources {sorted(set(held))}"
        ),
        Check(
            "after a restart it answers from the rules (source: fallback)",
            set(fallback) == {"fallback"},
            f"sources {sorted(set(fallback))}",
        ),
        Check(
            "and says so: /readyz is 503 with the load error",
            after["status"] == 503 and "failed to load" in reason,
            f"/readyz {after['status']}: {reason[:200]}",
        ),
    ]
