"""The model server follows the newest customer-history snapshot (``components.learn.history_store``).

A background thread reads ``LATEST`` every interval; a new version is read whole
and built into a lookup before one reference is swapped, as the model is. Until a
snapshot is found (none written yet, S3 down) the bundle's own snapshot answers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from components.learn import history_store
from components.learn.features import HistoryLookup
from components.serving.poller import Poller

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FollowedHistory:
    lookup: HistoryLookup
    info: history_store.SnapshotInfo


class HistoryFollower(Poller):
    thread_name = "history-poller"

    def __init__(self, root_uri: str, interval_s: float, on_loaded=None):
        super().__init__(interval_s)
        self.root_uri = root_uri
        self.on_loaded = on_loaded
        self.current: FollowedHistory | None = None
        self.last_error: str | None = None

    def check(self) -> bool:
        """Load the newest snapshot when ``LATEST`` moved; True when one was swapped in."""
        try:
            version = history_store.latest_version(self.root_uri)
            if version is None or (self.current is not None and self.current.info.version == version):
                return False
            snapshot, info = history_store.read(self.root_uri, version)
            followed = FollowedHistory(HistoryLookup(snapshot), info)
        except Exception as exc:  # unreadable or unreachable: keep answering with what we have
            error = f"{type(exc).__name__}: {exc}"
            if error != self.last_error:
                log.warning("customer history from %s not loaded (retrying every %.0f s): %s", self.root_uri,
                            self.interval_s, error)
            self.last_error = error
            return False
        self.current, self.last_error = followed, None  # the swap: one reference assignment
        log.info("customer history %s: %d customers, data until %s", info.version, info.customers, info.data_until)
        if self.on_loaded:
            self.on_loaded(followed)
        return True
