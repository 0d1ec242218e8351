"""Register: a blessed candidate becomes the champion (the alias moves; the old one is remembered)."""

from __future__ import annotations

from components.core.config import Config
from components.learn import tracking
from components.steps import guarded, record
from components.steps.outcomes import Promoted


def promote_step(cfg: Config, version: str, run_uri: str | None = None) -> Promoted:
    with guarded("register", run_uri, tracking.tracking_uri(cfg)):
        return _promote_step(cfg, version, run_uri)


def _promote_step(cfg: Config, version: str, run_uri: str | None = None) -> Promoted:
    tracking.setup(cfg)
    return record(run_uri, Promoted(**tracking.promote(cfg, version)))
