"""Logging set-up for the CLI and pipeline steps (called explicitly, never at import)."""

from __future__ import annotations

import logging
import os
import warnings

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def configure(level: str | None = None) -> None:
    level = (level or os.environ.get("SERVICETIME_LOG_LEVEL", "INFO")).upper()
    root = logging.getLogger()
    if not any(getattr(h, "_servicetime", False) for h in root.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(FORMAT, "%H:%M:%S"))
        handler._servicetime = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("urllib3", "matplotlib", "alembic", "mlflow.store.db.utils", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="mlflow")
