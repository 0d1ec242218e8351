"""What one model server process needs to know, built from the typed config.

``ServerSettings`` travels to uvicorn workers as JSON in one environment variable
(``SERVICETIME_SERVER_SETTINGS``): with ``--workers N`` uvicorn imports the app
factory by name in each worker, so nothing can be passed as an object.
"""

from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict, Field

from components.core.config import Config

SETTINGS_ENV = "SERVICETIME_SERVER_SETTINGS"


class ServerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_uri: str | None = None  # e.g. models:/servicetime@champion
    model_path: str | None = None  # a local bundle directory instead
    tracking_uri: str | None = None
    max_batch: int = Field(1000, ge=1)
    reload_interval_s: float = Field(10.0, gt=0)
    drift_window: int = Field(2000, ge=1)
    torch_threads: int = Field(1, ge=1)  # per worker: small batches gain nothing from more
    max_body_bytes: int | None = None  # default: 2 KiB per stop allowed in a batch
    # Start accepting requests only after the first load attempt (or this long): with several
    # workers, each one is then ready when it answers, and /readyz means the same on all of them.
    startup_load_timeout_s: float = Field(60.0, ge=0)
    # The prediction log (components.serving.predlog): None writes none.
    prediction_log_uri: str | None = None
    prediction_log_flush_rows: int = Field(20_000, ge=1)
    prediction_log_flush_s: float = Field(5.0, gt=0)
    prediction_log_queue: int = Field(10_000, ge=1)  # requests waiting for the writer, at most
    # The latest online-quality report (components.serving.monitor), re-read at most this often and
    # exposed on /metrics; None exposes none.
    online_report_uri: str | None = None
    online_report_every_s: float = Field(60.0, gt=0)
    # The customer-history snapshots (components.learn.history_store) to follow; None: the bundle's own.
    history_uri: str | None = None
    history_every_s: float = Field(30.0, gt=0)

    @property
    def body_limit(self) -> int:
        return self.max_body_bytes or 2048 * self.max_batch + 4096

    def to_env(self) -> dict[str, str]:
        return {SETTINGS_ENV: self.model_dump_json()}

    @classmethod
    def from_env(cls) -> ServerSettings:
        raw = os.environ.get(SETTINGS_ENV)
        if not raw:
            raise RuntimeError(f"{SETTINGS_ENV} is not set: start the server with `servicetime serve`")
        return cls.model_validate_json(raw)


def settings_from_config(cfg: Config, model_uri: str | None = None, model_path: str | None = None,
                         reload_interval_s: float | None = None) -> ServerSettings:
    """Settings from the config; with neither a URI nor a path, serve the champion."""
    from components.core.storage import join
    from components.learn import tracking
    from components.learn.history_store import history_root
    from components.serving.monitor import online_report_uri, prediction_log_uri

    if not model_uri and not model_path:
        model_uri = f"models:/{tracking.model_name(cfg)}@{tracking.CHAMPION}"
    return ServerSettings(
        model_uri=model_uri or None,
        model_path=model_path or None,
        tracking_uri=tracking.tracking_uri(cfg) if model_uri else None,
        max_batch=cfg.serve.max_batch,
        reload_interval_s=reload_interval_s or cfg.serve.reload_interval_s,
        drift_window=cfg.serve.drift_window,
        prediction_log_uri=prediction_log_uri(cfg) if cfg.monitor.log_predictions else None,
        prediction_log_flush_rows=cfg.monitor.log_flush_rows,
        prediction_log_flush_s=cfg.monitor.log_flush_s,
        prediction_log_queue=cfg.monitor.log_queue,
        online_report_uri=online_report_uri(cfg),
        history_uri=(cfg.serve.history_uri or history_root(join(cfg.workspace, "data"))) if cfg.serve.follow_history
        else None,
    )
