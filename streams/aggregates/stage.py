"""`StageAggregator`: the streaming aggregates of one entity kind over one partition of its
input, as `convcg aggregates` computes them scaled out (pure: no I/O).

The aggregates run in three stages, each keyed by its entity so that an entity's events meet
in one partition:

- **user**: the three event topics (keyed by user). Counts user windows and keeps the user's
  engagement sequence (``streams.aggregates.sequence.insert_recent``: first engagement per (impression,
  item), its (impression, item) key remembered in the seen-set like an event id), and forwards
  every accepted event keyed by its item (``out``).
- **item**: the by-item repartition topic. Counts item windows, remembers each item's
  advertiser (from impressions and conversions) and forwards every event keyed by its
  advertiser. An engagement carries no advertiser: one read before its item's advertiser is
  known waits (``parked``) and is forwarded when the advertiser is, so the features do not
  depend on the order the topics are read in.
- **advertiser**: the by-advertiser repartition topic. Counts advertiser windows.

Windows, smoothing and values are those of `streams.aggregates.windows` (the same `_EntityWindows`),
so a stage's updates equal `StreamingAggregator`'s for its entities over the same events.

Dedupe and replay. Each accepted event id is kept with its event time and its *position* (the
source and offset of the record it was read from) for the dedupe horizon. The same id at
another position is a duplicate and is ignored. The same id at the same position is the same
record read again (after a restart the consumer re-reads from the committed offsets): it is
applied again, but a bucket restored from the changelog is not counted into again for a record
below the positions that bucket was written at (``skip_below``), so a record counts exactly
once however the crash cut the last state flush. The dedupe horizon runs per stage partition:
an event is refused (``stats['too_late']``) when it is more than the horizon behind the
newest event its stage partition has seen.

State for the changelog (`streams.aggregates.changelog` encodes it): the buckets and metadata
changed since the last state flush (``changed``, ``meta_changed``), the buckets that left the
windows (``expired``), and the event ids accepted since (``new_seen``).
"""

from __future__ import annotations

import math
from collections import deque
from itertools import islice

from convcg.contract import WINDOW_SECONDS, WINDOWS, FeatureUpdate
from streams.aggregates.sequence import engaged_key, insert_recent, recent_entry, recent_features
from streams.aggregates.settings import AggregateSettings
from streams.aggregates.windows import MAX_PARKED_PER_ITEM, SEEN_PRUNE_MIN, _EntityWindows, window_features

USER, ITEM, ADVERTISER = "user", "item", "advertiser"
STAGES: tuple[str, ...] = (USER, ITEM, ADVERTISER)
#: how many source topics feed each stage (the user stage reads the three event topics)
SOURCES = {USER: 3, ITEM: 1, ADVERTISER: 1}
POSITION_BITS = 48  # a position is (source << POSITION_BITS) | offset
ENGAGEMENT = 1  # event kinds: 0 impression, 1 engagement, 2 conversion (as in streams.aggregates.windows)


def position(source: int, offset: int) -> int:
    return (source << POSITION_BITS) | offset


class StageAggregator:
    """One stage partition: ``apply`` events, ``drain`` feature updates, ``out`` forwards."""

    def __init__(self, entity: str, settings: AggregateSettings | None = None) -> None:
        if entity not in SOURCES:
            raise ValueError(f"unknown stage {entity!r}, expected one of {STAGES}")
        self.entity = entity
        self.settings = s = settings or AggregateSettings()
        self.n_sources = SOURCES[entity]
        self._bucket_seconds = s.bucket_seconds
        self._widths = [WINDOW_SECONDS[w] // s.bucket_seconds for w in WINDOWS]
        self._horizon = s.dedupe_horizon_seconds
        self._priors = (s.ctr_prior_alpha, s.ctr_prior_alpha + s.ctr_prior_beta,
                        s.cvr_prior_alpha, s.cvr_prior_alpha + s.cvr_prior_beta)
        self.table: dict[str, _EntityWindows] = {}
        self.dirty: dict[str, _EntityWindows] = {}  # touched since the last drain
        self.changed: dict[str, set[int]] = {}  # buckets counted into since the last state flush
        self.meta_changed: set[str] = set()  # recent lists / advertisers / parked since then
        self.expired: list[tuple[str, int]] = []  # buckets dropped from the windows since then
        self.recent: dict[str, list[list]] = {}  # user -> recent entries (``insert_recent``)
        self.item_advertiser: dict[str, str] = {}
        self.parked: dict[str, list[list]] = {}  # item -> [[event_id, ts, ingest_ms, position], ...]
        self.seen: dict[str, tuple[float, int]] = {}  # event id -> (ts, position), in arrival order
        self.new_seen: list[list] = []  # [[event_id, ts, position], ...] since the last state flush
        self.seen_batches: deque[tuple[bytes, float]] = deque()  # changelog keys of seen ids, with their newest ts
        self._seen_prune_at = SEEN_PRUNE_MIN
        self.newest = -math.inf
        self.skip_below: dict[tuple[str, int], list[int]] = {}  # restored bucket -> positions it was written at
        self.restored_upto: list[int] | None = None  # per source: the highest of those positions
        self.out: list[tuple[str, list]] = []  # (key, forward record) to the next stage
        self.stats = {"duplicates": 0, "too_late": 0, "no_advertiser": 0, "parked_dropped": 0, "replayed": 0}

    # --- input ---------------------------------------------------------------------------------

    def apply(self, event_id: str, kind: int, ts: float, user_id: str, item_id: str, advertiser_id: str,
              ingest_ms: int, source: int, offset: int, impression_id: str = "", dwell_ms: float = 0.0) -> None:
        """One event read at ``offset`` of ``source``; ``impression_id`` and ``dwell_ms`` are an
        engagement's (the user stage keeps them in the sequence)."""
        pos = (source << POSITION_BITS) | offset
        seen = self.seen.get(event_id)
        if seen is not None:
            if seen[1] != pos:
                self.stats["duplicates"] += 1
                return
            self.stats["replayed"] += 1  # the same record again: counts where not restored already
        else:
            if ts > self.newest:
                self.newest = ts
            elif ts < self.newest - self._horizon:
                self.stats["too_late"] += 1
                return
            self.seen[event_id] = (ts, pos)
            self.new_seen.append([event_id, ts, pos])
            if len(self.seen) >= self._seen_prune_at:
                self._prune_seen()
        entity = self.entity
        if entity == USER:
            key = user_id
            if kind == ENGAGEMENT:
                self._engaged(event_id, ts, user_id, item_id, impression_id, dwell_ms, pos)
            self.out.append((item_id, [event_id, kind, ts, item_id, advertiser_id, ingest_ms]))
        elif entity == ITEM:
            key = item_id
            self._route_to_advertiser(event_id, kind, ts, item_id, advertiser_id, ingest_ms, pos)
        else:
            key = advertiser_id
        if not key:
            return
        bucket = int(ts // self._bucket_seconds)
        st = self.table.get(key)
        if st is None:
            st = self.table[key] = _EntityWindows(ts, bucket, ingest_ms)
        self.dirty[key] = st
        if self.skip_below:
            below = self.skip_below.get((key, bucket))
            if below is not None and offset < below[source]:  # already in the restored bucket
                if ts > st.newest:
                    st.newest = ts
                if ingest_ms > st.ingest_ms:
                    st.ingest_ms = ingest_ms
                return
        st.count(ts, bucket, kind, ingest_ms, self._widths)
        buckets = self.changed.get(key)
        if buckets is None:
            buckets = self.changed[key] = set()
        buckets.add(bucket)

    def _engaged(self, event_id: str, ts: float, user_id: str, item_id: str, impression_id: str,
                 dwell_ms: float, pos: int) -> None:
        """Into the user's sequence if it is its (impression, item)'s first engagement so far
        (the same record read again is the same entry: no change)."""
        pair = engaged_key(impression_id, item_id)
        first = self.seen.get(pair)
        if first is not None and ts > first[0]:
            return  # a later engagement of the pair
        if first is None or ts < first[0]:
            self.seen[pair] = (ts, pos)
            self.new_seen.append([pair, ts, pos])
        recent = self.recent.get(user_id)
        if recent is None:
            recent = self.recent[user_id] = []
        insert_recent(recent, recent_entry(ts, item_id, float(dwell_ms), impression_id, event_id), self.settings.last_n)
        self.meta_changed.add(user_id)

    def _route_to_advertiser(self, event_id: str, kind: int, ts: float, item_id: str, advertiser_id: str,
                             ingest_ms: int, pos: int) -> None:
        """The item stage's forwarding: every event to its advertiser, an engagement to its
        item's remembered advertiser or, while there is none, parked until there is."""
        if kind == ENGAGEMENT:
            advertiser_id = self.item_advertiser.get(item_id, "")
            if advertiser_id:
                self.out.append((advertiser_id, [event_id, kind, ts, item_id, advertiser_id, ingest_ms]))
                return
            parked = self.parked.setdefault(item_id, [])
            if any(p[3] == pos for p in parked):
                return  # parked before a restart, read again
            self.stats["no_advertiser"] += 1
            if len(parked) < MAX_PARKED_PER_ITEM:
                parked.append([event_id, ts, ingest_ms, pos])
                self.meta_changed.add(item_id)
            else:
                self.stats["parked_dropped"] += 1
            return
        known = self.item_advertiser.get(item_id)
        if known is None or (kind == 0 and known != advertiser_id):
            self.item_advertiser[item_id] = advertiser_id
            self.meta_changed.add(item_id)
        if not advertiser_id:
            return
        self.out.append((advertiser_id, [event_id, kind, ts, item_id, advertiser_id, ingest_ms]))
        waiting = self.parked.pop(item_id, None) if item_id in self.parked else None
        if waiting:
            self.meta_changed.add(item_id)
            for parked_id, parked_ts, parked_ingest, _ in waiting:
                self.out.append((advertiser_id, [parked_id, ENGAGEMENT, parked_ts, item_id, advertiser_id, parked_ingest]))

    # --- output --------------------------------------------------------------------------------

    def drain(self) -> list[FeatureUpdate]:
        """One update per entity touched since the last drain, as of its newest event time
        (the values `StreamingAggregator.drain` sends for the entity)."""
        entity, seconds, widths, priors = self.entity, self._bucket_seconds, self._widths, self._priors
        is_user = entity == USER
        updates: list[FeatureUpdate] = []
        for key, st in self.dirty.items():
            newest_bucket = int(st.newest // seconds)
            if newest_bucket > st.bucket:
                dropped = st.advance(newest_bucket, widths)
                if dropped:
                    self.expired.extend((key, b) for b in dropped)
            features = window_features(st.sums, *priors)
            if is_user:
                features.update(recent_features(self.recent.get(key, ())))
            updates.append(FeatureUpdate(entity, key, st.newest, st.ingest_ms, features))
            st.ingest_ms = 0
        self.dirty.clear()
        self._prune_seen()
        return updates

    def touch_all(self) -> None:
        """Mark every entity for the next drain (its current values are sent once)."""
        self.dirty.update(self.table)

    def _prune_seen(self) -> None:
        """Forget ids behind the dedupe horizon, then keep at most ``max_seen`` (the latest);
        runs when the set has doubled since the last pruning."""
        if len(self.seen) < self._seen_prune_at:
            return
        cutoff = self.newest - self._horizon
        kept = {eid: v for eid, v in self.seen.items() if v[0] >= cutoff}
        if len(kept) > self.settings.max_seen:
            kept = dict(islice(kept.items(), len(kept) - self.settings.max_seen, None))
        self.seen = kept
        self._seen_prune_at = max(SEEN_PRUNE_MIN, 2 * len(kept))

    def evict_inactive(self) -> int:
        """Drop the windows of entities whose newest event is older than the dedupe horizon
        plus the longest window behind the newest event (their buckets go to ``expired``);
        recent lists and item advertisers are kept. Returns how many were dropped."""
        cutoff = self.newest - self._horizon - max(WINDOW_SECONDS.values())
        stale = [k for k, st in self.table.items() if st.newest < cutoff and k not in self.dirty]
        for key in stale:
            self.expired.extend((key, b) for b in self.table.pop(key).keys)
            self.changed.pop(key, None)
        for item, parked in list(self.parked.items()):
            kept = [p for p in parked if p[1] >= cutoff]
            if len(kept) != len(parked):
                self.meta_changed.add(item)
                if kept:
                    self.parked[item] = kept
                else:
                    del self.parked[item]
        return len(stale)

    @property
    def pending(self) -> int:
        return len(self.dirty)
