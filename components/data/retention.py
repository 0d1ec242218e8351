"""Retention: what piles up, and how long it is kept (``servicetime data prune``).

Landing batches beyond the newest ``raw_weeks`` (dataset versions keep their own
copies: the lineage of every model stays whole), quarantined rows, prediction-log
days, run logs and training checkpoints older than their setting in
``RetentionConfig``. Ages come from the object's write time, and for the
prediction log from its ``day=`` partition. ``dry_run`` lists without deleting.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field

from components.core.config import RetentionConfig
from components.core.storage import Storage, join
from components.data.datasets import DatasetStore

log = logging.getLogger(__name__)

DAY_S = 86400.0
DAY_PREFIX = "day="  # the prediction log's partitions (components.serving.predlog)


@dataclass
class Pruned:
    removed: dict[str, list[str]] = field(default_factory=dict)  # kind -> URIs removed (or, dry, to remove)

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.removed.values())


def _day_end(uri: str) -> float | None:
    """The end of a prediction-log partition's day (a partition is a whole day); None outside one."""
    for part in uri.split("/"):
        if part.startswith(DAY_PREFIX):
            try:
                day = dt.datetime.fromisoformat(part[len(DAY_PREFIX):]).replace(tzinfo=dt.UTC)
            except ValueError:
                return None
            return day.timestamp() + DAY_S
    return None


def prune(cfg: RetentionConfig, data_root: str, log_uri: str, run_logs_uri: str, checkpoint_uri: str,
          now: float | None = None, dry_run: bool = False, storage: Storage | None = None) -> Pruned:
    storage = storage or Storage()
    now = time.time() if now is None else now
    out = Pruned()
    store = DatasetStore(data_root, storage)
    batches = store.raw_batches()
    out.removed["raw"] = [store.raw_uri(b) for b in batches[:-cfg.raw_weeks]] if cfg.raw_weeks else []

    def older(prefix: str, days: float, age_of=None) -> list[str]:
        found = []
        for uri in storage.list(prefix):
            written = (age_of(uri) if age_of else None) or storage.modified(uri)
            if now - written > days * DAY_S:
                found.append(uri)
        return found

    out.removed["quarantine"] = older(join(data_root, "quarantine"), cfg.quarantine_days)
    out.removed["prediction log"] = older(log_uri, cfg.prediction_log_days, _day_end)
    out.removed["run logs"] = older(run_logs_uri, cfg.run_log_days)
    out.removed["checkpoints"] = older(checkpoint_uri, cfg.checkpoint_days)
    if not dry_run:
        for kind, uris in out.removed.items():
            for uri in uris:
                storage.delete(uri)
            if uris:
                log.info("pruned %d %s file(s)", len(uris), kind)
    return out
