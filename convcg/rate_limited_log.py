"""A failure that may repeat on every request (a feature lookup, a store read), logged at most
once per interval with how many times it happened since: the log stays readable when a
dependency is down, and the count (not the flood) says how bad it is. Count the failures in a
metric beside it; this only keeps the log bounded."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

DEFAULT_INTERVAL_S = 60.0


class RateLimitedLog:
    def __init__(self, logger: logging.Logger, what: str, interval_s: float = DEFAULT_INTERVAL_S,
                 level: int = logging.WARNING, clock: Callable[[], float] = time.monotonic):
        self.logger, self.what, self.interval_s, self.level, self.clock = logger, what, interval_s, level, clock
        self._lock = threading.Lock()
        self._unlogged = 0
        self._last: float | None = None

    def error(self, exc: BaseException | None = None, detail: str = "") -> bool:
        """Count one failure; log it (with the count since the last line) if the interval has
        passed. Returns whether a line was logged."""
        with self._lock:
            self._unlogged += 1
            now = self.clock()
            if self._last is not None and now - self._last < self.interval_s:
                return False
            count, self._unlogged, self._last = self._unlogged, 0, now
        cause = f"{type(exc).__name__}: {exc}" if exc is not None else ""
        self.logger.log(self.level, "%s: %d time(s) since the last report (at most one line per %.0f s); "
                        "latest: %s%s", self.what, count, self.interval_s, cause,
                        f" ({detail})" if detail else "")
        return True
