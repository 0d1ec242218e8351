"""A background thread that checks something every interval: the model alias, the history snapshot."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod


class Poller(ABC):
    """Calls ``check()`` every ``interval_s`` on a daemon thread until stopped, or until ``done()``."""

    thread_name = "poller"

    def __init__(self, interval_s: float):
        self.interval_s = max(float(interval_s), 0.1)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @abstractmethod
    def check(self) -> bool:
        """One look: True when something new was taken in."""

    def done(self) -> bool:
        """True when there is nothing more to watch (the thread then ends)."""
        return False

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.check()
            if self.done():
                return
            self._stop.wait(self.interval_s)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()
