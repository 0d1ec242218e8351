"""Run the pipeline on the embedded default: KFP's local SubprocessRunner, no Kubernetes, no Docker."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from components.config import Config
from components.steps.summary import summarize
from components.storage import Storage, join

log = logging.getLogger(__name__)


def run_local(cfg: Config, data_root: str, run_uri: str, last_weeks: int = 0, fail_on_rejected: bool = True) -> dict:
    """Execute ``servicetime_pipeline`` locally; return the run summary (also on failure)."""
    from kfp import local

    from pipelines.pipeline import servicetime_pipeline

    import warnings

    # Intended: the SubprocessRunner runs our image's components in this very environment.
    warnings.filterwarnings("ignore", message="You may be attemping to run a task", category=RuntimeWarning)
    pipeline_root = Path(cfg.workspace).resolve() / "kfp"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root), raise_on_error=False)
    started = time.perf_counter()
    error = None
    try:
        servicetime_pipeline(
            data_root=data_root, run_uri=run_uri, config_json=cfg.model_dump_json(), last_weeks=last_weeks,
            num_workers=cfg.train.num_workers, epochs=cfg.train.epochs,
            min_improvement=cfg.eval.min_improvement_vs_baseline, max_slice_regression=cfg.eval.max_slice_regression,
            fail_on_rejected=fail_on_rejected)
    except Exception as exc:  # the local runner raises on some failures even with raise_on_error=False
        error = str(exc)
        log.error("pipeline failed: %s", exc)
    storage = Storage()
    summary_uri = join(run_uri, "summary.json")
    summary = storage.read_json(summary_uri) if storage.exists(summary_uri) else summarize(run_uri, "FAILED", error)
    summary["wall_seconds"] = round(time.perf_counter() - started, 1)
    summary["artifacts"]["kfp_outputs"] = str(pipeline_root)
    storage.write_json(summary_uri, summary)
    return summary
