"""The windows of the streaming aggregates per user / item / advertiser over event time (pure: no I/O).

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
(`streams.aggregates.stage`). `tests/support/streaming_aggregator.py` computes all three in one
place with the same windows: the reference the stages are tested against, and the benches'
baseline.

Idempotent: an ``event_id`` seen before is ignored. The seen-set keeps ids for at least
``dedupe_horizon_seconds`` of event time behind the newest event: whenever it has doubled
since the last pruning (drained or not) it forgets the ids behind the horizon and keeps at
most the latest ``max_seen``, so it never holds more than twice the ids of one horizon, nor
more than twice ``max_seen``. An event older than that horizon is refused (counted in
``stats['too_late']``), so a late redelivery is never counted twice while the set holds
the horizon (size ``max_seen`` to the events of one horizon).
"""

from __future__ import annotations

from bisect import bisect_right, insort
from typing import Any

from convcg.contract import COUNTED, WINDOWS, count_feature_names

SEEN_PRUNE_MIN = 10_000  # the seen-set is not pruned below this size
MAX_PARKED_PER_ITEM = 10_000  # engagements waiting for their item's advertiser, per item
_N_KINDS = len(COUNTED)
_N_WINDOWS = len(WINDOWS)
_COUNT_NAMES = count_feature_names()  # kind-major: impressions_1h, impressions_1d, ...
if (_N_KINDS, _N_WINDOWS) != (3, 3):  # _EntityWindows.count is unrolled for the contract's 3 kinds x 3 windows
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
