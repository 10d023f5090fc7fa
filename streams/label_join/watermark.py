"""`PartitionWatermark`: the event-time watermark of one join partition.

A join partition p reads partition p of the impressions, engagements and conversions topics.
Each source advances with the newest event time seen on it (or a producer watermark record).
The partition's watermark is the minimum over its *active* sources minus the allowed
lateness, where a source that is fully caught up (nothing more to fetch) does not hold the
others back (Flink-style idleness). So a fast topic cannot push decisions past events still
waiting in a slower topic, and a quiet topic (few conversions) does not stall the join.

A source's newest time is clamped to processing time plus the allowed clock skew
(``max_skew_s``): a record stamped ahead of the clock cannot carry the watermark there when
the sources go idle. Only a trusted close (`convcg replay --close`) is exempt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class SourceProgress:
    max_ts: float = -math.inf
    next_offset: int = 0
    last_arrival: float = 0.0  # monotonic wall time of its newest record (liveness only)


@dataclass
class PartitionWatermark:
    allowed_lateness_s: float
    idle_after_s: float = 0.0
    started: float = 0.0
    sources: dict[str, SourceProgress] = field(default_factory=dict)
    value: float = -math.inf
    max_skew_s: float = math.inf

    def observe(self, topic: str, ts: float, offset: int, now: float = 0.0, clock: float = math.inf,
                trusted: bool = False) -> None:
        """One record of ``topic`` at event time ``ts``; ``now``: monotonic time (liveness),
        ``clock``: wall time (the clamp); ``trusted``: a trusted close, not clamped."""
        src = self.sources.get(topic)
        if src is None:
            src = self.sources[topic] = SourceProgress()
        src.last_arrival = now
        if not trusted:
            ts = min(ts, clock + self.max_skew_s)
        if ts > src.max_ts:
            src.max_ts = ts
        if offset + 1 > src.next_offset:
            src.next_offset = offset + 1

    @property
    def newest(self) -> float:
        return max((s.max_ts for s in self.sources.values()), default=-math.inf)

    def compute(self, highwaters: dict[str, int | None], topics: tuple[str, ...],
                committed: dict[str, int | None] | None = None, now: float = math.inf) -> float:
        """Advance (never backwards) given each source topic's highwater and committed offset.

        A source whose highwater is not known yet (no fetch answered since a start or a
        rebalance) holds the watermark: it may still hold older events, e.g. ones redelivered
        after a crash. A source restarted at its end (committed = highwater) holds nothing.
        Highwaters are only as fresh as the last fetch, so a caught-up source counts as idle
        only after ``idle_after_s`` of wall time without a record (a liveness rule, as Flink's
        idleness; the decisions themselves stay on event time)."""
        active: list[float] = []
        committed = committed or {}
        for topic in topics:
            src = self.sources.get(topic)
            hw = highwaters.get(topic)
            consumed = max(src.next_offset if src else 0, committed.get(topic) or 0)
            last = src.last_arrival if src else self.started
            caught_up = hw is not None and consumed >= hw and now - last >= self.idle_after_s
            if caught_up:
                continue
            active.append(src.max_ts if src else -math.inf)
        if active:
            frontier = min(active)
        else:
            frontier = self.newest
        candidate = frontier - self.allowed_lateness_s
        if candidate > self.value:
            self.value = candidate
        return self.value
