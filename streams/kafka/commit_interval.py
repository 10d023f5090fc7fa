"""`PendingCommits`: the source offsets ready to commit, committed at most every interval."""

from __future__ import annotations

import time
from typing import Any, Awaitable, Callable, Hashable


class PendingCommits:
    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._offsets: dict[Hashable, int] = {}
        self._last = 0.0

    def add(self, offsets: dict[Hashable, int]) -> None:
        """Offsets below which every record is done (newer ones replace older ones)."""
        self._offsets.update(offsets)

    def forget(self, tps: set) -> None:
        """Never commit these partitions' pending offsets (revoked)."""
        for tp in tps:
            self._offsets.pop(tp, None)

    def due(self) -> bool:
        return bool(self._offsets) and time.monotonic() - self._last >= self.interval_s

    async def commit(self, commit: Callable[[dict[Any, int]], Awaitable[Any]]) -> None:
        """Hand every pending offset to ``commit`` and start the next interval."""
        offsets, self._offsets = self._offsets, {}
        self._last = time.monotonic()
        await commit(offsets)
