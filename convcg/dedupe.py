"""`SeenWithinHorizon`: the ids a reader has seen, remembered for a horizon of event time.

The topics are at-least-once, and a redelivered record carries the same id (labels: the
deterministic ``label_id``) and the same event time as its first copy, on the same partition.
A redelivery therefore comes within a short span of event time behind the newest record of its
partition, and an id needs remembering only that long. Each partition keeps its own newest
time (partitions are read at different paces); whenever the set has doubled since the last
pruning it forgets the ids more than ``horizon_s`` behind the slowest partition's newest, so it
holds about twice one horizon's ids. A record older than the horizon of its partition cannot
be told from a forgotten duplicate: it is refused and counted (``too_old``). Ids loaded from a
reader's own store at start are added without a partition (they move no partition's time).
"""

from __future__ import annotations

import math
from typing import Hashable

PRUNE_MIN = 1024
#: the default horizon of the readers that deduplicate labels (trainer, features sink)
DEFAULT_HORIZON_S = 8 * 86400.0


class SeenWithinHorizon:
    def __init__(self, horizon_s: float) -> None:
        if horizon_s <= 0:
            raise ValueError("horizon_s must be positive")
        self.horizon_s = horizon_s
        self._seen: dict[str, float] = {}  # id -> event time
        self._newest: dict[Hashable, float] = {}  # partition -> newest event time read
        self._prune_at = PRUNE_MIN
        self.too_old = 0

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, record_id: str) -> bool:
        return record_id in self._seen

    def too_old_for(self, partition: Hashable | None, ts: float) -> bool:
        """Whether ``add`` would refuse a record at ``ts`` on ``partition`` as older than its
        partition's horizon (nothing is changed)."""
        return partition is not None and ts < self._newest.get(partition, -math.inf) - self.horizon_s

    def add(self, partition: Hashable | None, record_id: str, ts: float) -> bool:
        """True if the record is new (and now remembered); False for a duplicate or a record
        older than its partition's horizon."""
        if record_id in self._seen:
            return False
        if self.too_old_for(partition, ts):
            self.too_old += 1
            return False
        if partition is not None and ts > self._newest.get(partition, -math.inf):
            self._newest[partition] = ts
        self._seen[record_id] = ts
        if len(self._seen) >= self._prune_at:
            self._prune()
        return True

    def _prune(self) -> None:
        if self._newest:
            cutoff = min(self._newest.values()) - self.horizon_s
            self._seen = {k: t for k, t in self._seen.items() if t >= cutoff}
        self._prune_at = max(PRUNE_MIN, 2 * len(self._seen))
