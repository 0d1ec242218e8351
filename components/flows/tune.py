"""``servicetime tune`` on a workspace: prepare the features exactly as the pipeline does (its steps),
then search with ``components.learn.tune``."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from components.core.config import Config
from components.learn.tune import finish_search, search_features, tuning_dir

log = logging.getLogger(__name__)


def prepare_features(cfg: Config, data_root: str, out_dir: Path) -> tuple[Path, str]:
    """Ingest, validate and featurize the workspace's data as the pipeline does: (features dir, data version)."""
    from components.data.datasets import DatasetStore
    from components.steps.featurize import featurize
    from components.steps.ingest import generate_raw, ingest
    from components.steps.validate import CLEAN_FILE, validate_dataset

    if not DatasetStore(data_root).raw_batches():
        log.info("no data under %s: generating %d weeks with the simulator", data_root, cfg.data.weeks)
        generate_raw(cfg.data, data_root)
    version = ingest(data_root, out_dir / "dataset").data_version
    validate_dataset(cfg, data_root, version, out_dir / "clean")
    features = out_dir / "features"
    featurize(cfg, out_dir / "clean" / CLEAN_FILE, features)
    return features, version


def tune_workspace(cfg: Config, data_root: str, trials: int) -> dict[str, Any]:
    """Search the model's settings on the workspace's data; write ``tuning/best.json`` and ``report.md``.

    Returns a summary: ``trials``, ``best_trial``, ``best_val_mae_s``, ``defaults_val_mae_s``,
    ``improvement_pct``, ``early_stopped``, ``best_settings``, ``best_path``, ``report_path``,
    ``mlflow_run_id`` (the parent run), ``child_run_ids``, ``data_version``, ``seconds``.
    """
    started = time.perf_counter()
    out = tuning_dir(cfg)
    features, version = prepare_features(cfg, data_root, out / "work")
    return finish_search(cfg, search_features(cfg, features, trials, out / "ray"), version, started)
