"""Pipeline overhead benchmark (not a test): the orchestrated run against its own work, side by side.

    .venv/bin/python -m pytest tests/benchmarks/bench_pipeline.py -m bench -s -p no:cacheprovider

The same default data (generated once, copied into two workspaces) and the same config:

* **pipeline**: ``servicetime run`` as a user starts it (``pipelines.local.run_local``: the KFP
  local runner in a child session, every step a fresh Python process, training on local Ray
  with the configured workers);
* **direct**: the same library steps called one after another in this process
  (ingest, validate, features, train in-process, evaluate, register, deploy, summary).

Printed: ``pipeline overhead: X.XXx`` (wall of the first / wall of the second) and a per-step
table: the pipeline's wall per step (from its own progress lines), the direct call's wall,
the difference, and what a fresh process pays before a step's work (``python -c "import
<the step's modules>"``, measured apart). The train row also shows Ray's fixed costs (the Ray
fit's wall minus its epochs) and what the step does beside the fit (imports, MLflow, calibration).
Goal (printed): overhead <= 1.6x. The model's quality is printed for both (test MAE), which must
agree within noise.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.benchmarks.results import REPO, goal, print_table, record

GOAL = 1.6
STEP_LINE = re.compile(r"^\s*ok\s+(\w+)\s+([\d.]+) s")
# What each step's process imports before its work (the bodies in pipelines/ops.py).
STEP_IMPORTS = {
    "ingest": "components.steps.ingest", "validate": "components.steps.validate",
    "features": "components.steps.featurize", "tune": "components.steps.tune", "train": "components.steps.train",
    "evaluate": "components.steps.evaluate", "register": "components.steps.register",
    "deploy": "components.steps.deploy", "summary": "components.steps.summary",
}


def import_seconds(module: str, repeats: int = 2) -> float:
    """A fresh interpreter importing KFP's executor and one step's module: the best of ``repeats``."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        # As KFP's executor runs a step: its entry point (with _KFP_RUNTIME set, `import kfp` skips
        # the client), then what the component's body imports.
        subprocess.run([sys.executable, "-c", f"import kfp.dsl.executor_main, {module}"], cwd=REPO, check=True,
                       env={**os.environ, "_KFP_RUNTIME": "true"})
        best = min(best, time.perf_counter() - started)
    return best


def run_pipeline(cfg, data_root: str) -> tuple[float, dict, dict[str, float]]:
    from pipelines.local import run_local

    lines: list[str] = []
    started = time.perf_counter()
    summary = run_local(cfg, data_root, str(Path(cfg.workspace) / "runs" / "bench"),
                        echo=lambda line, *_: lines.append(line))
    wall = time.perf_counter() - started
    steps = {m.group(1): float(m.group(2)) for m in map(STEP_LINE.match, lines) if m}
    return wall, summary, steps


def run_direct(cfg, data_root: str) -> tuple[float, dict, dict[str, float]]:
    from components.steps.deploy import deploy_step
    from components.steps.evaluate import evaluate_step
    from components.steps.featurize import featurize
    from components.steps.ingest import ingest
    from components.steps.register import promote_step
    from components.steps.summary import summarize
    from components.steps.train import train_step
    from components.steps.validate import CLEAN_FILE, validate_dataset

    ws, run_uri = Path(cfg.workspace), str(Path(cfg.workspace) / "runs" / "bench")
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"num_workers": 0})})
    steps: dict[str, float] = {}

    def timed(name, fn, *args, **kwargs):
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        steps[name] = time.perf_counter() - t
        return out

    started = time.perf_counter()
    version = timed("ingest", ingest, data_root, ws / "ingest", 0, run_uri).data_version
    clean = timed("validate", validate_dataset, cfg, data_root, version, ws / "validate", run_uri=run_uri)
    timed("features", featurize, cfg, ws / "validate" / CLEAN_FILE, ws / "features", run_uri)
    trained = timed("train", train_step, cfg, ws / "features", ws / "model", clean.clean_version, run_uri)
    evaluated = timed("evaluate", evaluate_step, cfg, ws / "features", ws / "model", ws / "evaluation",
                      trained.run_id, run_uri)
    if evaluated.blessed:
        timed("register", promote_step, cfg, trained.model_version, run_uri)
        timed("deploy", deploy_step, cfg, ws / "features", float(evaluated.metrics["candidate"]["mae"]), run_uri)
    summary = timed("summary", summarize, run_uri)
    return time.perf_counter() - started, summary, steps


@pytest.mark.bench
def test_bench_pipeline():
    from components.core.config import load_config
    from components.steps.ingest import generate_raw

    root = Path(tempfile.mkdtemp(prefix="servicetime-bench-pipeline-"))
    try:
        base = load_config(None, {"workspace": str(root / "seed")})
        generate_raw(base.data, str(root / "data"))
        roots = {}
        for name in ("pipeline", "direct"):
            shutil.copytree(root / "data", root / name / "data")
            roots[name] = str(root / name / "data")
        pcfg = load_config(None, {"workspace": str(root / "pipeline")})
        dcfg = load_config(None, {"workspace": str(root / "direct")})
        p_wall, p_summary, p_steps = run_pipeline(pcfg, roots["pipeline"])
        d_wall, d_summary, d_steps = run_direct(dcfg, roots["direct"])
        imports = {s: import_seconds(m) for s, m in STEP_IMPORTS.items() if s in p_steps}
    finally:
        shutil.rmtree(root, ignore_errors=True)

    training = p_summary.get("training") or {}
    fit_s, epochs_s = training.get("train_seconds"), training.get("epoch_seconds_sum")
    rows = []
    for step, seconds in p_steps.items():
        direct = d_steps.get(step)
        rows.append({"step": step, "pipeline_s": round(seconds, 1),
                     "direct_s": round(direct, 1) if direct is not None else None,
                     "difference_s": round(seconds - direct, 1) if direct is not None else None,
                     "process_start_imports_s": round(imports.get(step, float("nan")), 1),
                     # Ray's start-up, worker set-up and teardown: the Ray fit's wall minus its epochs.
                     "ray_fixed_s": round(fit_s - epochs_s, 1) if step == "train" and fit_s and epochs_s else None,
                     # The rest of the train step: imports, MLflow, calibration, logging and registering the model.
                     "beside_fit_s": round(seconds - fit_s, 1) if step == "train" and fit_s else None})
    print_table("pipeline", rows)
    outside = p_wall - sum(p_steps.values())
    print(f"outside the steps (the run's start and end: its processes, KFP's runner, MLflow's store): {outside:.1f} s")
    ratio = p_wall / d_wall
    mae = {k: ((s.get("metrics") or {}).get("candidate") or {}).get("mae") for k, s in
           (("pipeline", p_summary), ("direct", d_summary))}
    print(f"pipeline overhead: {ratio:.2f}x (pipeline {p_wall:.0f} s, direct {d_wall:.0f} s, "
          f"{p_wall - d_wall:.0f} s more; "
          f"test MAE {mae['pipeline']} vs {mae['direct']})")
    record("pipeline", {"overhead": ratio, "pipeline_s": p_wall, "direct_s": d_wall, "steps": rows, "test_mae": mae,
                        "outside_steps_s": outside,
                        "goal": goal(f"pipeline overhead <= {GOAL}x", ratio <= GOAL, f"{ratio:.2f}x")})
    assert p_summary["status"] == "SUCCEEDED" and d_summary["status"] == "SUCCEEDED"
