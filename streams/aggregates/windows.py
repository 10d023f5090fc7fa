"""Streaming aggregates per user / item / advertiser over event time (pure: no I/O).

For every entity: impressions, engagements and conversions over the 1h / 1d / 7d windows,
Beta-smoothed ``ctr_7d`` (engagements per impression) and ``cvr_7d`` (conversions per
engagement), and for users their last N engagements, newest first: the item ids
(``last_engaged_items``), event times (``last_engaged_ts``) and dwells (``last_engaged_dwell_ms``),
kept as `streams.aggregates.sequence` says (the first engagement per (impression, item), the
sequence the point-in-time training data reads).

Windows move with event time only, never the wall clock. Counts are kept in buckets of
``bucket_seconds`` (default 300 s = 5 min). The value of window W for an entity whose newest
event time is T counts the events whose bucket lies in (bucket(T) - W/bucket, bucket(T)], i.e.
event times in [start_of_bucket(T) - W + bucket, T]: the window's far edge is rounded to the
bucket grid, so it covers between W - bucket and W of history. With ``bucket_seconds=1`` and
whole-second timestamps this is exactly (T - W, T]. Events older than T but inside the window
(out of order) are counted; buckets that fall out of the 7d window are dropped.

Routing: impressions and conversions count for their user, item and advertiser; engagements
carry no advertiser, so they count for the advertiser remembered for the item (from its
impressions or conversions, or seeded by ``remember_item_advertiser``). An engagement whose
item has no known advertiser yet (its impression is on another topic and may be read later:
topics and partitions are read side by side, and a rebuild reads whole logs) is parked and
counted for the advertiser as soon as one is known, so the counts do not depend on the order
the topics are read in (``stats['no_advertiser']`` counts the parked ones).

`convcg aggregates` runs these windows scaled out, one entity kind per stage partition
(`streams.aggregates.stage`); this class computes all three in one place (the reference the
stages are tested against, and the benches' baseline).

Idempotent: an ``event_id`` seen before is ignored. The seen-set keeps ids for at least
``dedupe_horizon_seconds`` of event time behind the newest event: whenever it has doubled
since the last pruning (drained or not) it forgets the ids behind the horizon and keeps at
most the latest ``max_seen``, so it never holds more than twice the ids of one horizon, nor
more than twice ``max_seen``. An event older than that horizon is refused (counted in
``stats['too_late']``), so a late redelivery is never counted twice while the set holds
the horizon (size ``max_seen`` to the events of one horizon).
"""

from __future__ import annotations

import math
from bisect import bisect_right, insort
from itertools import islice
from typing import Any

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from convcg.contract import (
    COUNTED,
    ENTITIES,
    RECENT_SEQUENCE_LENGTH,
    WINDOW_SECONDS,
    WINDOWS,
    Conversion,
    Engagement,
    FeatureUpdate,
    Impression,
    count_feature_names,
)
from streams.aggregates.sequence import (
    engaged_key,
    insert_recent,
    recent_entry,
    recent_features,
)

SEEN_PRUNE_MIN = 10_000  # the seen-set is not pruned below this size
MAX_PARKED_PER_ITEM = 10_000  # engagements waiting for their item's advertiser, per item
_KIND_OF = {Impression: 0, Engagement: 1, Conversion: 2}
_N_KINDS = len(COUNTED)
_N_WINDOWS = len(WINDOWS)
_COUNT_NAMES = count_feature_names()  # kind-major: impressions_1h, impressions_1d, ...
if (_N_KINDS, _N_WINDOWS) != (3, 3):  # apply() is unrolled for the contract's 3 kinds x 3 windows
    raise ImportError(f"streams.aggregates.windows expects 3 counted kinds x 3 windows, got {COUNTED} x {WINDOWS}")


class _EntityWindows:
    """One entity's bucketed counts and their running window sums.

    ``sums[kind * 3 + w]`` (kind-major, the order of ``count_feature_names()``) always equals
    the sum of ``counts[b][kind]`` over buckets ``b > bucket - width[w]``. ``bucket`` is where
    the windows were last settled; events may land in newer buckets meanwhile (they are inside
    every window). Settling (``advance``) happens once per drain, not per event: it subtracts
    what left each window and drops buckets that left the longest one.
    """

    __slots__ = ("newest", "bucket", "counts", "keys", "sums", "ingest_ms")

    def __init__(self, ts: float, bucket: int, ingest_ms: int) -> None:
        self.newest = ts
        self.bucket = bucket
        self.counts: dict[int, list[int]] = {}
        self.keys: list[int] = []  # the buckets of ``counts``, ascending
        self.sums = [0] * (_N_KINDS * _N_WINDOWS)
        self.ingest_ms = ingest_ms

    def new_row(self, bucket: int) -> list[int]:
        row = self.counts[bucket] = [0] * _N_KINDS
        keys = self.keys
        if not keys or bucket > keys[-1]:
            keys.append(bucket)
        else:
            insort(keys, bucket)
        return row

    def count(self, ts: float, bucket: int, kind: int, ingest_ms: int, widths: list[int]) -> None:
        """Count one event of ``kind`` at ``ts`` (in ``bucket``) into the windows it falls in."""
        if ts > self.newest:
            self.newest = ts
        if ingest_ms > self.ingest_ms:
            self.ingest_ms = ingest_ms
        age = self.bucket - bucket  # < 0 for buckets newer than the last settling
        w1h, w1d, w7d = widths
        if age >= w7d:
            return  # already outside every window of this entity
        row = self.counts.get(bucket)
        if row is None:
            row = self.new_row(bucket)
        row[kind] += 1
        sums, base = self.sums, kind * _N_WINDOWS
        sums[base + 2] += 1
        if age < w1d:
            sums[base + 1] += 1
            if age < w1h:
                sums[base] += 1

    def advance(self, new_bucket: int, widths: list[int]) -> list[int]:
        """Settle the windows at ``new_bucket``: subtract the buckets that left each window
        (found by bisection, so each bucket costs O(1) per window over its life) and drop those
        that left the longest one. Returns the dropped buckets."""
        old, counts, keys, sums = self.bucket, self.counts, self.keys, self.sums
        for w, width in enumerate(widths):  # buckets in (old - width, new - width] leave window w
            lo = bisect_right(keys, old - width)
            hi = bisect_right(keys, new_bucket - width, lo)
            for b in keys[lo:hi]:
                imps, engs, convs = counts[b]
                sums[w] -= imps
                sums[_N_WINDOWS + w] -= engs
                sums[2 * _N_WINDOWS + w] -= convs
        expired = bisect_right(keys, new_bucket - widths[-1])
        dropped = keys[:expired]
        if expired:
            for b in dropped:
                del counts[b]
            del keys[:expired]
        self.bucket = new_bucket
        return dropped

    @classmethod
    def from_buckets(cls, newest: float, bucket: int, counts: dict[int, list[int]], widths: list[int]) -> "_EntityWindows":
        """An entity's windows rebuilt from its bucket counts (a restore), settled at ``bucket``;
        buckets outside every window are left out."""
        st = cls(newest, bucket, 0)
        sums = st.sums
        for b in sorted(counts):
            age = bucket - b
            if age >= widths[-1]:
                continue
            row = st.counts[b] = list(counts[b])
            st.keys.append(b)
            for w, width in enumerate(widths):
                if age < width:
                    for kind in range(_N_KINDS):
                        sums[kind * _N_WINDOWS + w] += row[kind]
        return st


class AggregateSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONVCG_AGGREGATES_")

    bucket_seconds: int = 300
    last_n: int = RECENT_SEQUENCE_LENGTH
    ctr_prior_alpha: float = 1.0  # prior mean 1/50 = 2% CTR, worth 50 impressions
    ctr_prior_beta: float = 49.0
    cvr_prior_alpha: float = 1.0  # prior mean 1/10 = 10% conversions per engagement
    cvr_prior_beta: float = 9.0
    dedupe_horizon_seconds: float = 8 * 86400.0
    max_seen: int = 2_000_000
    #: accepted event ids per changelog record of seen ids: one flush after a burst holds tens
    #: of thousands (~50 bytes each), more than the broker's 1 MB message limit in one record
    seen_ids_per_record: int = Field(5_000, ge=1)

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


def window_features(sums: list[int], ctr_a: float, ctr_ab: float, cvr_a: float, cvr_ab: float) -> dict[str, Any]:
    """The features of one entity from its window sums: the counts and the smoothed rates
    (``ctr_ab`` = the CTR prior's alpha + beta, likewise ``cvr_ab``), as ``drain`` sends them."""
    features: dict[str, Any] = dict(zip(_COUNT_NAMES, sums))
    impressions_7d, engagements_7d, conversions_7d = sums[2], sums[5], sums[8]
    features["ctr_7d"] = min(1.0, (engagements_7d + ctr_a) / (impressions_7d + ctr_ab))
    features["cvr_7d"] = min(1.0, (conversions_7d + cvr_a) / (engagements_7d + cvr_ab))
    return features


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
