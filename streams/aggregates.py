"""Streaming aggregates per user / item / advertiser over event time (pure: no I/O).

For every entity: impressions, engagements and conversions over the 1h / 1d / 7d windows,
Beta-smoothed ``ctr_7d`` (engagements per impression) and ``cvr_7d`` (conversions per
engagement), and for users the last N engaged item ids, newest first (distinct items).

Windows move with event time only, never the wall clock. Counts are kept in buckets of
``bucket_seconds`` (default 300 s = 5 min). The value of window W for an entity whose newest
event time is T counts the events whose bucket lies in (bucket(T) - W/bucket, bucket(T)], i.e.
event times in [start_of_bucket(T) - W + bucket, T]: the window's far edge is rounded to the
bucket grid, so it covers between W - bucket and W of history. With ``bucket_seconds=1`` and
whole-second timestamps this is exactly (T - W, T]. Events older than T but inside the window
(out of order) are counted; buckets that fall out of the 7d window are dropped.

Routing: impressions and conversions count for their user, item and advertiser; engagements
carry no advertiser, so they count for the advertiser remembered for the item (from its
impressions or conversions, or seeded by ``remember_item_advertiser``).

Idempotent: an ``event_id`` seen before is ignored. The seen-set keeps ids for
``dedupe_horizon_seconds`` of event time behind the newest event (and at most ``max_seen``
ids); an event older than that horizon is refused (counted in ``stats['too_late']``), so a
late redelivery can never be counted twice.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from pydantic import model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from convcg.contract import COUNTED, ENTITIES, WINDOW_SECONDS, WINDOWS, Conversion, Engagement, FeatureUpdate, Impression

STATE_VERSION = 1
_KIND_OF = {Impression: 0, Engagement: 1, Conversion: 2}
_NOT_SEEN = object()


class AggregateSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONVCG_AGGREGATES_")

    bucket_seconds: int = 300
    last_n: int = 20
    ctr_prior_alpha: float = 1.0  # prior mean 1/50 = 2% CTR, worth 50 impressions
    ctr_prior_beta: float = 49.0
    cvr_prior_alpha: float = 1.0  # prior mean 1/10 = 10% conversions per engagement
    cvr_prior_beta: float = 9.0
    dedupe_horizon_seconds: float = 8 * 86400.0
    max_seen: int = 2_000_000

    @model_validator(mode="after")
    def _check(self) -> "AggregateSettings":
        if self.bucket_seconds < 1 or any(s % self.bucket_seconds for s in WINDOW_SECONDS.values()):
            raise ValueError(f"bucket_seconds must divide every window {WINDOW_SECONDS}")
        if self.dedupe_horizon_seconds < max(WINDOW_SECONDS.values()):
            raise ValueError("dedupe_horizon_seconds must cover the longest window")
        if min(self.ctr_prior_alpha, self.ctr_prior_beta, self.cvr_prior_alpha, self.cvr_prior_beta) <= 0:
            raise ValueError("Beta priors must be > 0")
        return self


def smoothed_rate(successes: float, trials: float, alpha: float, beta: float) -> float:
    """Posterior mean of a Beta(alpha, beta) prior after ``successes`` in ``trials``, capped at 1
    (an impression may collect several engagements)."""
    return min(1.0, (successes + alpha) / (trials + alpha + beta))


def insert_recent(recent: list[list], ts: float, item_id: str, n: int) -> None:
    """Keep ``recent`` = [[ts, item_id], ...] newest first, distinct items, at most ``n``."""
    for k, (old_ts, old_item) in enumerate(recent):
        if old_item == item_id:
            if old_ts >= ts:
                return
            del recent[k]
            break
    k = 0
    while k < len(recent) and recent[k][0] >= ts:
        k += 1
    if k < n:
        recent.insert(k, [ts, item_id])
        del recent[n:]


class StreamingAggregator:
    """Apply events one by one (``apply``), collect coalesced updates (``drain``)."""

    def __init__(self, settings: AggregateSettings | None = None) -> None:
        self.settings = s = settings or AggregateSettings()
        self._bucket = s.bucket_seconds
        self._window_buckets = [WINDOW_SECONDS[w] // s.bucket_seconds for w in WINDOWS]
        # entity -> id -> [newest_ts, {bucket: [impressions, engagements, conversions]}, max ingest_ms]
        self._state: dict[str, dict[str, list]] = {e: {} for e in ENTITIES}
        self._dirty: dict[str, set[str]] = {e: set() for e in ENTITIES}
        self._recent: dict[str, list[list]] = {}  # user -> [[ts, item], ...] newest first
        self._item_advertiser: dict[str, str] = {}
        self._seen: set[str] = set()
        self._seen_order: deque[tuple[float, str]] = deque()
        self._newest = -math.inf
        self.stats = {"applied": 0, "duplicates": 0, "too_late": 0, "no_advertiser": 0}

    # --- input ---------------------------------------------------------------------------------

    def remember_item_advertiser(self, item_id: str, advertiser_id: str) -> None:
        self._item_advertiser[item_id] = advertiser_id

    def apply(self, event: Impression | Engagement | Conversion, ingest_ms: int) -> None:
        event_id = event.event_id
        if event_id in self._seen:
            self.stats["duplicates"] += 1
            return
        ts = event.ts
        if ts > self._newest:
            self._newest = ts
        elif ts < self._newest - self.settings.dedupe_horizon_seconds:
            self.stats["too_late"] += 1
            return
        self._seen.add(event_id)
        self._seen_order.append((ts, event_id))
        if len(self._seen_order) > self.settings.max_seen:
            self._seen.discard(self._seen_order.popleft()[1])

        kind = _KIND_OF[type(event)]
        item_id = event.item_id
        if kind == 1:
            advertiser_id = self._item_advertiser.get(item_id)
            recent = self._recent.get(event.user_id)
            if recent is None:
                recent = self._recent[event.user_id] = []
            insert_recent(recent, ts, item_id, self.settings.last_n)
        else:
            advertiser_id = event.advertiser_id
            if kind == 0 or item_id not in self._item_advertiser:
                self._item_advertiser[item_id] = advertiser_id
        bucket = int(ts // self._bucket)
        self._bump("user", event.user_id, bucket, kind, ts, ingest_ms)
        self._bump("item", item_id, bucket, kind, ts, ingest_ms)
        if advertiser_id:
            self._bump("advertiser", advertiser_id, bucket, kind, ts, ingest_ms)
        else:
            self.stats["no_advertiser"] += 1
        self.stats["applied"] += 1

    def _bump(self, entity: str, key: str, bucket: int, kind: int, ts: float, ingest_ms: int) -> None:
        st = self._state[entity].get(key)
        if st is None:
            st = self._state[entity][key] = [ts, {}, ingest_ms]
        else:
            if ts > st[0]:
                st[0] = ts
            if ingest_ms > st[2]:
                st[2] = ingest_ms
        row = st[1].get(bucket)
        if row is None:
            row = st[1][bucket] = [0, 0, 0]
        row[kind] += 1
        self._dirty[entity].add(key)

    # --- output --------------------------------------------------------------------------------

    def window_counts(self, entity: str, key: str) -> dict[str, int]:
        """``{impressions_1h: n, ...}`` as of the entity's newest event time (prunes expired
        buckets)."""
        st = self._state[entity].get(key)
        sums = [[0, 0, 0] for _ in WINDOWS]
        if st is not None:
            newest_bucket = int(st[0] // self._bucket)
            widths = self._window_buckets
            longest = widths[-1]
            expired = []
            for bucket, row in st[1].items():
                age = newest_bucket - bucket
                if age >= longest:
                    expired.append(bucket)
                    continue
                for w, width in enumerate(widths):
                    if age < width:
                        acc = sums[w]
                        acc[0] += row[0]
                        acc[1] += row[1]
                        acc[2] += row[2]
            for bucket in expired:
                del st[1][bucket]
        return {f"{what}_{w}": sums[k][c] for c, what in enumerate(COUNTED) for k, w in enumerate(WINDOWS)}

    def features(self, entity: str, key: str) -> dict[str, Any]:
        s = self.settings
        out: dict[str, Any] = self.window_counts(entity, key)
        out["ctr_7d"] = smoothed_rate(out["engagements_7d"], out["impressions_7d"], s.ctr_prior_alpha, s.ctr_prior_beta)
        out["cvr_7d"] = smoothed_rate(out["conversions_7d"], out["engagements_7d"], s.cvr_prior_alpha, s.cvr_prior_beta)
        if entity == "user":
            out["last_engaged_items"] = [item for _, item in self._recent.get(key, ())]
        return out

    def drain(self) -> list[FeatureUpdate]:
        """One update per entity touched since the last drain, as of its newest event time."""
        updates: list[FeatureUpdate] = []
        for entity in ENTITIES:
            dirty = self._dirty[entity]
            table = self._state[entity]
            for key in sorted(dirty):
                st = table[key]
                updates.append(FeatureUpdate(entity, key, st[0], st[2], self.features(entity, key)))
                st[2] = 0
            dirty.clear()
        self._prune_seen()
        return updates

    def _prune_seen(self) -> None:
        cutoff = self._newest - self.settings.dedupe_horizon_seconds
        order, seen = self._seen_order, self._seen
        while order and order[0][0] < cutoff:
            seen.discard(order.popleft()[1])

    def evict_inactive(self) -> int:
        """Drop the window buckets of entities whose newest event is older than the dedupe
        horizon plus the longest window behind the newest event time: any event still accepted
        is so much newer that those buckets could only ever count 0 again. Bounds memory. Users' last-engaged lists and item advertisers are kept. Returns the
        number of entities evicted."""
        cutoff = self._newest - self.settings.dedupe_horizon_seconds - max(WINDOW_SECONDS.values())
        evicted = 0
        for entity, table in self._state.items():
            dirty = self._dirty[entity]
            stale = [k for k, st in table.items() if st[0] < cutoff and k not in dirty]
            for k in stale:
                del table[k]
            evicted += len(stale)
        return evicted

    @property
    def pending(self) -> int:
        """Entities waiting to be drained."""
        return sum(len(d) for d in self._dirty.values())

    # --- persistence ---------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot (restore with ``from_state``)."""
        return {
            "version": STATE_VERSION,
            "bucket_seconds": self._bucket,
            "newest": self._newest if math.isfinite(self._newest) else None,
            "entities": {e: {k: [st[0], [[b, *row] for b, row in st[1].items()], st[2]] for k, st in table.items()}
                         for e, table in self._state.items()},
            "dirty": {e: sorted(d) for e, d in self._dirty.items()},
            "recent": self._recent,
            "item_advertiser": self._item_advertiser,
            "seen": [[ts, eid] for ts, eid in self._seen_order],
            "stats": dict(self.stats),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], settings: AggregateSettings | None = None) -> "StreamingAggregator":
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"aggregator state version {state.get('version')!r}, expected {STATE_VERSION}")
        agg = cls(settings)
        if state["bucket_seconds"] != agg.settings.bucket_seconds:
            raise ValueError(f"state was built with {state['bucket_seconds']}s buckets, settings say "
                             f"{agg.settings.bucket_seconds}s")
        agg._newest = -math.inf if state["newest"] is None else float(state["newest"])
        for entity, table in state["entities"].items():
            agg._state[entity] = {k: [ts, {int(r[0]): list(r[1:4]) for r in rows}, ingest]
                                  for k, (ts, rows, ingest) in table.items()}
        agg._dirty = {e: set(state["dirty"].get(e, ())) for e in ENTITIES}
        agg._recent = {u: [list(x) for x in rec] for u, rec in state["recent"].items()}
        agg._item_advertiser = dict(state["item_advertiser"])
        agg._seen_order = deque((float(ts), eid) for ts, eid in state["seen"])
        agg._seen = {eid for _, eid in agg._seen_order}
        agg.stats.update(state.get("stats", {}))
        return agg
