"""`LabelJoiner`: the event-time join of impressions, engagements and conversions into labels.

One joiner serves one partition (all three event topics are keyed by user, so a partition
holds every event of its users). It is pure: events go in with `add`, the watermark is moved
with `advance`, and `drain` hands back labels, dropped events (with a reason), the opaque
tokens of events whose effects are now complete (the worker acks their offsets), and the
impression states that changed (the worker persists them).

Determinism: events are held in a reorder buffer and applied in (event time, kind, event id)
order once the watermark passes them, interleaved with the negative / expiry timers of pending
impressions. So the labels depend only on the events and the watermark, never on arrival
order within the allowed lateness or on the wall clock.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

import msgspec

from convcg.contract import Conversion, Engagement, Event, Impression, Label, label_id
from streams.label_join.rules import (
    RANK_CONVERSION,
    RANK_ENGAGEMENT,
    RANK_IMPRESSION,
    RANK_TIMER,
    LabelRules,
    attribution_deadline,
    conversion_kind,
    engagement_weight,
    last_touch,
    negative_deadline,
    within_attribution_window,
)

_TIMER_NEGATIVE, _TIMER_EXPIRE, _TIMER_ORPHAN = 0, 1, 2
_RANK = {Impression: RANK_IMPRESSION, Engagement: RANK_ENGAGEMENT, Conversion: RANK_CONVERSION}


class ImpressionState(msgspec.Struct, gc=False):
    """What the join remembers about one served impression until its attribution window ends.

    ``gc=False``: it holds only an event and strings (no reference cycles), so the garbage
    collector does not scan the many the join keeps."""

    imp: Impression
    engagement_ts: float | None = None
    negative_emitted: bool = False
    converted: bool = False
    conversion_ids: tuple[str, ...] = ()

    @property
    def engaged(self) -> bool:
        return self.engagement_ts is not None

    def to_dict(self) -> dict[str, Any]:
        """The persisted form: the impression's fields and the join's flags, in one JSON object.
        (Only strings, numbers and a tuple of strings: the garbage collector stops tracking
        such a dict, and the worker keeps one per pending impression.)"""
        d = msgspec.structs.asdict(self.imp)
        d["engagement_ts"] = self.engagement_ts
        d["negative_emitted"] = self.negative_emitted
        d["converted"] = self.converted
        d["conversion_ids"] = self.conversion_ids
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ImpressionState":
        imp = Impression(d["event_id"], d["impression_id"], d["ts"], d["user_id"], d["item_id"],
                         d["advertiser_id"], d["surface"], d["position"])
        return cls(imp, d.get("engagement_ts"), d.get("negative_emitted", False),
                   d.get("converted", False), tuple(d.get("conversion_ids", ())))


@dataclass
class JoinOutput:
    labels: list[Label] = field(default_factory=list)
    dropped: list[tuple[Event, str]] = field(default_factory=list)
    released: list[Any] = field(default_factory=list)
    changed: dict[str, "ImpressionState | None"] = field(default_factory=dict)  # impression_id -> state, None = deleted


class LabelJoiner:
    """Event-time label join for one partition. See the module docstring."""

    def __init__(self, rules: LabelRules | None = None) -> None:
        self.rules = rules or LabelRules()
        self.watermark = -math.inf
        self.impressions: dict[str, ImpressionState] = {}
        self._touches: dict[tuple[str, str], list[tuple[float, float, str]]] = {}
        # the reorder buffer: entries (ts, rank, event_id, seq, event, token), in that order
        # (seq is unique, so entries never tie); those added since the last `advance` wait
        # unsorted in _arrived and are sorted in once per advance
        self._buffer: list[tuple] = []
        self._arrived: list[tuple] = []
        self._buffered_ids: set[str] = set()
        # timers, (time, RANK_TIMER, kind, impression_id), in two heaps: the short negative and
        # orphan deadlines apart from the attribution-window expiries, which are far more (one
        # per impression of the whole window) and would make every pop of the others dearer
        self._timers: list[tuple] = []
        self._expiries: list[tuple] = []
        self._orphans: dict[str, list[tuple[Engagement, Any]]] = {}
        self._seq = 0
        self._out = JoinOutput()
        self.counters: Counter[str] = Counter()
        # the rule for each kind of event; each releases the event's token once its effects are out
        self._handlers = {Impression: self._on_impression, Engagement: self._on_engagement_event,
                          Conversion: self._on_conversion_event}

    # --- input -----------------------------------------------------------------------------

    def add(self, event: Event, token: Any = None) -> bool:
        """Buffer one validated event. Returns False for a duplicate still in the buffer
        (its token is released at once: the first copy carries the effect)."""
        if event.event_id in self._buffered_ids:
            self.counters["duplicate_events"] += 1
            if token is not None:
                self._out.released.append(token)
            return False
        if event.ts <= self.watermark:
            self.counters["late_events"] += 1
        self._buffered_ids.add(event.event_id)
        self._seq += 1
        self._arrived.append((event.ts, _RANK[type(event)], event.event_id, self._seq, event, token))
        return True

    def advance(self, watermark: float) -> None:
        """Move the watermark (never backwards) and apply everything at or before it.

        Events and timers are applied in (time, rank, ...) order: before each buffered event,
        every timer due before it fires (earliest first, across both timer heaps); an event's
        rank is below `RANK_TIMER`, so a timer at the event's own time fires after it."""
        if watermark > self.watermark:
            self.watermark = watermark
        wm = self.watermark
        buffer = self._buffer
        if self._arrived:
            _merge_sorted(buffer, self._arrived)
            self._arrived = []
        timers, expiries, fire_before = self._timers, self._expiries, self._fire_before
        handlers, buffered_ids = self._handlers, self._buffered_ids
        i, n = 0, len(buffer)
        while i < n and buffer[i][0] <= wm:
            ts, _, event_id, _, event, token = buffer[i]
            i += 1
            if (timers and timers[0][0] < ts) or (expiries and expiries[0][0] < ts):
                fire_before(ts, False)
            buffered_ids.discard(event_id)
            handlers[type(event)](event, token)
        del buffer[:i]
        fire_before(wm, True)

    def _fire_before(self, t: float, inclusive: bool) -> None:
        """Fire the timers due before ``t`` (or at it, if ``inclusive``), earliest first."""
        timers, expiries, pop, fire = self._timers, self._expiries, heapq.heappop, self._fire
        while True:
            heap = expiries if expiries and (not timers or expiries[0] < timers[0]) else timers
            if not heap or heap[0][0] > t or (heap[0][0] == t and not inclusive):
                return
            _, _, kind, key = pop(heap)
            fire(kind, key)

    def drain(self) -> JoinOutput:
        out, self._out = self._out, JoinOutput()
        return out

    @property
    def buffered(self) -> int:
        return len(self._buffer) + len(self._arrived)

    # --- persistence -----------------------------------------------------------------------

    def restore(self, states: Iterable[dict[str, Any]], watermark: float = -math.inf) -> None:
        """Rebuild from persisted impression states (timers and the touch index are derived)."""
        for d in states:
            st = ImpressionState.from_dict(d)
            self._install(st)
            if st.engaged:
                self._touch(st)
        self.watermark = max(self.watermark, watermark)

    # --- rules -----------------------------------------------------------------------------

    def _release(self, token: Any) -> None:
        if token is not None:
            self._out.released.append(token)

    def _install(self, st: ImpressionState) -> None:
        imp = st.imp
        self.impressions[imp.impression_id] = st
        if not (st.engaged or st.converted or st.negative_emitted):
            heapq.heappush(self._timers, (negative_deadline(imp.ts, self.rules), RANK_TIMER, _TIMER_NEGATIVE, imp.impression_id))
        heapq.heappush(self._expiries, (attribution_deadline(imp.ts, self.rules), RANK_TIMER, _TIMER_EXPIRE, imp.impression_id))

    def _changed(self, st: ImpressionState) -> None:
        self._out.changed[st.imp.impression_id] = st  # serialised once per drain by the caller

    def _on_impression(self, imp: Impression, token: Any) -> None:
        imp_id = imp.impression_id
        if imp_id in self.impressions:
            self.counters["duplicate_impressions"] += 1
        else:
            st = self.impressions[imp_id] = ImpressionState(imp)
            heapq.heappush(self._timers, (negative_deadline(imp.ts, self.rules), RANK_TIMER, _TIMER_NEGATIVE, imp_id))
            heapq.heappush(self._expiries, (attribution_deadline(imp.ts, self.rules), RANK_TIMER, _TIMER_EXPIRE, imp_id))
            self._out.changed[imp_id] = st
            if self._orphans:
                for engagement, orphan_token in self._orphans.pop(imp_id, ()):  # engagements that came first
                    self._on_engagement(engagement, None)
                    self._release(orphan_token)
        if token is not None:
            self._out.released.append(token)

    def _on_engagement_event(self, e: Engagement, token: Any) -> None:
        if self._on_engagement(e, token):
            self._release(token)  # else parked as an orphan: its token is released when resolved

    def _on_engagement(self, e: Engagement, token: Any) -> bool:
        st = self.impressions.get(e.impression_id)
        if st is None:
            self._orphans.setdefault(e.impression_id, []).append((e, token))
            heapq.heappush(self._timers, (e.ts + self.rules.orphan_ttl_s, RANK_TIMER, _TIMER_ORPHAN, e.impression_id))
            return False
        if (e.user_id, e.item_id) != (st.imp.user_id, st.imp.item_id):
            self._drop(e, "engagement_does_not_match_impression")
            return True
        if st.engaged:
            return True  # only the first engagement labels; later ones are idempotent
        if e.ts < st.imp.ts:
            self._drop(e, "engagement_before_impression")
            return True
        st.engagement_ts = e.ts
        if st.negative_emitted:
            self.counters["engagement_after_negative"] += 1
        self._touch(st)
        self._changed(st)
        self._emit(st, "engagement", e.ts, engagement=1,
                   weight=engagement_weight(e.dwell_ms, self.rules.engagement_weight_cap))
        return True

    def _touch(self, st: ImpressionState) -> None:
        imp = st.imp
        self._touches.setdefault((imp.user_id, imp.item_id), []).append(
            (st.engagement_ts, imp.ts, imp.impression_id))

    def _on_conversion_event(self, c: Conversion, token: Any) -> None:
        self._on_conversion(c)
        self._release(token)

    def _on_conversion(self, c: Conversion) -> None:
        if c.impression_id:
            st = self.impressions.get(c.impression_id)
            if st is None:
                self._drop(c, "impression_unknown_or_past_attribution_window")
                return
            if (c.user_id, c.item_id) != (st.imp.user_id, st.imp.item_id):
                self._drop(c, "conversion_does_not_match_impression")
                return
            if not within_attribution_window(st.imp.ts, c.ts, self.rules):
                self._drop(c, "outside_attribution_window")
                return
        else:
            imp_id = last_touch(self._touches.get((c.user_id, c.item_id), []), c.ts, self.rules)
            if imp_id is None:
                self._drop(c, "no_engaged_impression_in_attribution_window")
                return
            st = self.impressions[imp_id]
        if c.event_id in st.conversion_ids:
            self.counters["duplicate_conversions"] += 1
            return
        st.conversion_ids += (c.event_id,)
        st.converted = True
        self._changed(st)
        self._emit(st, conversion_kind(st.negative_emitted), c.ts, cause=c.event_id, conversion=1,
                   value=c.value, engagement=int(st.engaged))

    def _fire(self, kind: int, key: str) -> None:
        if kind == _TIMER_ORPHAN:
            if self.impressions.get(key) is None:
                for engagement, token in self._orphans.pop(key, ()):
                    self._drop(engagement, "engagement_for_unknown_impression")
                    self._release(token)
            return
        st = self.impressions.get(key)
        if st is None:
            return
        if kind == _TIMER_NEGATIVE:
            if not (st.engagement_ts is not None or st.converted or st.negative_emitted):
                st.negative_emitted = True
                self._out.changed[key] = st
                self._emit(st, "negative", negative_deadline(st.imp.ts, self.rules))
        else:  # expiry: the attribution window is over, forget the impression
            del self.impressions[key]
            self._out.changed[key] = None
            if st.engaged:
                touches = self._touches.get((st.imp.user_id, st.imp.item_id))
                if touches is not None:
                    touches[:] = [t for t in touches if t[2] != key]
                    if not touches:
                        del self._touches[(st.imp.user_id, st.imp.item_id)]

    def _drop(self, event: Event, reason: str) -> None:
        self.counters[f"dropped:{reason}"] += 1
        self._out.dropped.append((event, reason))

    def _emit(self, st: ImpressionState, kind: str, label_ts: float, cause: str | None = None,
              conversion: int = 0, value: float = 0.0, engagement: int = 0, weight: float = 0.0) -> None:
        imp = st.imp
        self._out.labels.append(Label(
            label_id(imp.impression_id, kind, cause), imp.impression_id, imp.user_id, imp.item_id,
            imp.advertiser_id, imp.surface, imp.ts, label_ts, kind, conversion, value, engagement,
            weight, imp.position))


def compute_labels(events: Iterable[Event], rules: LabelRules | None = None) -> list[Label]:
    """Run the streaming rules offline over a whole log, closing every window at the end.

    The reference for tests and for building training data without a broker. Partitioning
    does not matter: every rule is local to one user.
    """
    joiner = LabelJoiner(rules)
    for ev in events:
        joiner.add(ev)
    joiner.advance(math.inf)
    return joiner.drain().labels


def _merge_sorted(buffer: list, arrived: list) -> None:
    """Sort ``arrived`` into the sorted ``buffer`` in place. Events arrive nearly in time
    order, so only the buffer's tail from the earliest arrival's place is sorted again with
    them: a batch costs its own size, not the whole buffer's (a full sort scans every buffered
    event once per batch, and the buffer holds the watermark's lag of events)."""
    cut = bisect.bisect_left(buffer, min(arrived))
    buffer[cut:] = sorted(buffer[cut:] + arrived)
