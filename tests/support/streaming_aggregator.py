"""`StreamingAggregator`: the streaming aggregates of all three entities in one object, event by
event (pure: no I/O). A test oracle, not production code: `convcg aggregates` computes the same
features scaled out in stages (`streams.aggregates.stage`), and its tests and the benches check
the stages against this. The semantics (windows, routing, dedupe) are those of
`streams.aggregates.windows`' docstring, with the same `_EntityWindows`."""

from __future__ import annotations

import math
from itertools import islice
from typing import Any

from convcg.contract import (
    ENTITIES,
    WINDOW_SECONDS,
    WINDOWS,
    Conversion,
    Engagement,
    FeatureUpdate,
    Impression,
)
from streams.aggregates.sequence import engaged_key, insert_recent, recent_entry, recent_features
from streams.aggregates.settings import AggregateSettings
from streams.aggregates.windows import (
    _COUNT_NAMES,
    SEEN_PRUNE_MIN,
    MAX_PARKED_PER_ITEM,
    _EntityWindows,
    smoothed_rate,
    window_features,
)

_KIND_OF = {Impression: 0, Engagement: 1, Conversion: 2}


class StreamingAggregator:
    """Apply events one by one (``apply``), collect coalesced updates (``drain``)."""

    def __init__(self, settings: AggregateSettings | None = None) -> None:
        self.settings = s = settings or AggregateSettings()
        self._bucket_seconds = s.bucket_seconds
        self._widths = [WINDOW_SECONDS[w] // s.bucket_seconds for w in WINDOWS]
        self._horizon = s.dedupe_horizon_seconds
        self._last_n = s.last_n
        self._max_seen = s.max_seen
        self._state: dict[str, dict[str, _EntityWindows]] = {e: {} for e in ENTITIES}
        self._dirty: dict[str, dict[str, _EntityWindows]] = {e: {} for e in ENTITIES}  # since the last drain
        self._tables = [(self._state[e], self._dirty[e]) for e in ENTITIES]  # in the order apply() passes keys
        self._recent: dict[str, list[list]] = {}  # user -> recent entries (``insert_recent``)
        self._item_advertiser: dict[str, str] = {}
        self._parked: dict[str, list[tuple[float, int]]] = {}  # item -> engagements (ts, ingest_ms) without advertiser
        self._seen: dict[str, float] = {}  # event_id -> ts, in arrival order
        self._seen_prune_at = SEEN_PRUNE_MIN
        self._newest = -math.inf
        self.stats = {"duplicates": 0, "too_late": 0, "no_advertiser": 0, "parked_dropped": 0}

    # --- input ---------------------------------------------------------------------------------

    def remember_item_advertiser(self, item_id: str, advertiser_id: str) -> None:
        self._item_advertiser[item_id] = advertiser_id

    def apply(self, event: Impression | Engagement | Conversion, ingest_ms: int) -> None:
        event_id = event.event_id
        seen = self._seen
        if event_id in seen:
            self.stats["duplicates"] += 1
            return
        ts = event.ts
        if ts > self._newest:
            self._newest = ts
        elif ts < self._newest - self._horizon:
            self.stats["too_late"] += 1
            return
        seen[event_id] = ts
        if len(seen) >= self._seen_prune_at:  # also while no drain comes (a rebuild)
            self._prune_seen()

        kind = _KIND_OF[type(event)]
        item_id = event.item_id
        user_id = event.user_id
        if kind == 1:
            advertiser_id = self._item_advertiser.get(item_id)
            pair = engaged_key(event.impression_id, item_id)  # type: ignore[union-attr]  # an engagement
            first = seen.get(pair)
            if first is None or ts <= first:  # else a later engagement of the pair: not in the sequence
                if first is None or ts < first:
                    seen[pair] = ts
                recent = self._recent.get(user_id)
                if recent is None:
                    recent = self._recent[user_id] = []
                insert_recent(recent, recent_entry(ts, item_id, float(event.dwell_ms),  # type: ignore[union-attr]
                                                   event.impression_id, event_id), self._last_n)  # type: ignore[union-attr]
        else:
            advertiser_id = event.advertiser_id  # type: ignore[union-attr]  # not an engagement
            if item_id not in self._item_advertiser:
                self._item_advertiser[item_id] = advertiser_id
                if item_id in self._parked and advertiser_id:
                    for parked_ts, parked_ingest in self._parked.pop(item_id):
                        self._count_engagement_for(advertiser_id, parked_ts, parked_ingest)
            elif kind == 0:
                self._item_advertiser[item_id] = advertiser_id
        bucket = int(ts // self._bucket_seconds)
        widths = self._widths
        if not advertiser_id and kind == 1:
            self.stats["no_advertiser"] += 1
            parked = self._parked.setdefault(item_id, [])
            if len(parked) < MAX_PARKED_PER_ITEM:
                parked.append((ts, ingest_ms))
            else:
                self.stats["parked_dropped"] += 1
        for (table, dirty), key in zip(self._tables, (user_id, item_id, advertiser_id)):
            if not key:
                continue
            st = table.get(key)
            if st is None:
                st = table[key] = _EntityWindows(ts, bucket, ingest_ms)
            dirty[key] = st
            st.count(ts, bucket, kind, ingest_ms, widths)

    def _count_engagement_for(self, advertiser_id: str, ts: float, ingest_ms: int) -> None:
        """Count one parked engagement for the advertiser its item turned out to have (the
        advertiser step of ``apply``, for one entity)."""
        table, dirty = self._tables[2]
        bucket = int(ts // self._bucket_seconds)
        st = table.get(advertiser_id)
        if st is None:
            st = table[advertiser_id] = _EntityWindows(ts, bucket, ingest_ms)
        dirty[advertiser_id] = st
        st.count(ts, bucket, 1, ingest_ms, self._widths)

    def _settle(self, st: _EntityWindows) -> None:
        newest_bucket = int(st.newest // self._bucket_seconds)
        if newest_bucket > st.bucket:
            st.advance(newest_bucket, self._widths)

    # --- output --------------------------------------------------------------------------------

    def window_counts(self, entity: str, key: str) -> dict[str, int]:
        """``{impressions_1h: n, ...}`` as of the entity's newest event time."""
        st = self._state[entity].get(key)
        if st is None:
            return dict.fromkeys(_COUNT_NAMES, 0)
        self._settle(st)
        return dict(zip(_COUNT_NAMES, st.sums))

    def features(self, entity: str, key: str) -> dict[str, Any]:
        s = self.settings
        out: dict[str, Any] = self.window_counts(entity, key)
        out["ctr_7d"] = smoothed_rate(out["engagements_7d"], out["impressions_7d"], s.ctr_prior_alpha, s.ctr_prior_beta)
        out["cvr_7d"] = smoothed_rate(out["conversions_7d"], out["engagements_7d"], s.cvr_prior_alpha, s.cvr_prior_beta)
        if entity == "user":
            out.update(recent_features(self._recent.get(key, ())))
        return out

    def drain(self) -> list[FeatureUpdate]:
        """One update per entity touched since the last drain (in first-touch order), as of
        its newest event time. Same values as ``features()``."""
        s = self.settings
        ctr_a, ctr_ab = s.ctr_prior_alpha, s.ctr_prior_alpha + s.ctr_prior_beta
        cvr_a, cvr_ab = s.cvr_prior_alpha, s.cvr_prior_alpha + s.cvr_prior_beta
        seconds, widths, recent = self._bucket_seconds, self._widths, self._recent
        updates: list[FeatureUpdate] = []
        append = updates.append
        for entity in ENTITIES:
            dirty = self._dirty[entity]
            is_user = entity == "user"
            for key, st in dirty.items():
                newest_bucket = int(st.newest // seconds)
                if newest_bucket > st.bucket:
                    st.advance(newest_bucket, widths)
                features = window_features(st.sums, ctr_a, ctr_ab, cvr_a, cvr_ab)
                if is_user:
                    features.update(recent_features(recent.get(key, ())))
                append(FeatureUpdate(entity, key, st.newest, st.ingest_ms, features))
                st.ingest_ms = 0
            dirty.clear()
        self._prune_seen()
        return updates

    def _prune_seen(self) -> None:
        """Forget ids behind the dedupe horizon, then keep at most ``max_seen`` (the latest
        arrivals). Runs when the set has doubled since the last pruning: amortised O(1)."""
        seen = self._seen
        if len(seen) < self._seen_prune_at:
            return
        cutoff = self._newest - self._horizon
        kept = {eid: ts for eid, ts in seen.items() if ts >= cutoff}
        if len(kept) > self._max_seen:
            kept = dict(islice(kept.items(), len(kept) - self._max_seen, None))
        self._seen = kept
        self._seen_prune_at = max(SEEN_PRUNE_MIN, 2 * len(kept))

    def evict_inactive(self) -> int:
        """Drop the window state of entities whose newest event is older than the dedupe
        horizon plus the longest window behind the newest event time: any event still accepted
        is so much newer that their buckets could only ever count 0 again. Bounds memory.
        Users' last-engaged lists and item advertisers are kept. Returns how many were dropped."""
        cutoff = self._newest - self._horizon - max(WINDOW_SECONDS.values())
        evicted = 0
        for entity, table in self._state.items():
            dirty = self._dirty[entity]
            stale = [k for k, st in table.items() if st.newest < cutoff and k not in dirty]
            for k in stale:
                del table[k]
            evicted += len(stale)
        for item, parked in list(self._parked.items()):
            kept = [p for p in parked if p[0] >= cutoff]
            if kept:
                self._parked[item] = kept
            else:
                del self._parked[item]
        return evicted

    @property
    def pending(self) -> int:
        """Entities waiting to be drained."""
        return sum(len(d) for d in self._dirty.values())
