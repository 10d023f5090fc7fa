"""`InOrderAcks`: which source offsets may be committed, strictly in offset order per partition.

The join finishes records out of offset order: an engagement waits in the reorder buffer (or
as an orphan for its impression) while later records of the same partition are done at once
(dead letters, producer watermarks, events the watermark already passed). An offset may be
committed only when every record before it in its partition is done.

Faust's own acking cannot be trusted with that (faust-streaming 0.15.3): its stream acks the
records it *skips* during a rebalance or recovery (so a record can count as acked before the
agent has seen it), it can deliver a record twice after its recovery seeks back, and its
commit check for a missing head of the acked run is off by one (``Consumer._new_offset``).
Each lets an offset be committed while its record is still held, and a crash then loses it.
So the worker turns Faust's acks off for the source topics and commits what this computes,
and it processes each partition's records contiguously: a record that arrives after a hole
waits until the hole has been read from the broker (`streams.label_join.faust.hole_read`), since the watermark it
would move could overtake the records in the hole and change their decisions.
"""

from __future__ import annotations

from collections import deque
from typing import Hashable

import msgspec


class Pending(msgspec.Struct, gc=False):
    """One delivered record: done once every effect of it is on the broker. (``gc=False``: it
    holds two numbers, so the garbage collector need not scan the one per record in flight.)"""

    offset: int
    done: bool = False
    arrived: float = 0.0  # monotonic time it was delivered (the age of the oldest one held is exported)


REPEAT = "repeat"  # a second delivery of a record already tracked: the first copy carries the effect
GAP = "gap"  # records before this one were never delivered: read them first


class InOrderAcks:
    def __init__(self) -> None:
        self._queues: dict[Hashable, deque[Pending]] = {}
        self._next: dict[Hashable, int] = {}  # per partition: the next offset expected

    def track(self, tp: Hashable, offset: int, start: int | None = None, now: float = 0.0) -> Pending | str:
        """Track a delivered record. ``start`` is where the consumer was positioned for this
        partition (its committed offset; None: unknown, the first record starts it).

        Returns ``REPEAT`` for a record delivered again (Faust redelivers after its recovery
        seeks back) and ``GAP`` for one that arrives before the records between the expected
        offset and it (Faust's stream skips records during a rebalance or recovery): the
        caller must not process it before the records from `expected(tp)` on, or a watermark moved by it
        would overtake the skipped records: the worker reads the hole from the broker."""
        expected = self._next.get(tp)
        if expected is None:
            expected = offset if start is None else start
        if offset < expected:
            return REPEAT
        if offset > expected:
            self._next[tp] = expected
            return GAP
        self._next[tp] = offset + 1
        entry = Pending(offset, False, now)
        q = self._queues.get(tp)
        if q is None:
            q = self._queues[tp] = deque()
        q.append(entry)
        return entry

    def expected(self, tp: Hashable) -> int | None:
        return self._next.get(tp)

    def skip_to(self, tp: Hashable, offset: int) -> None:
        """The offsets before ``offset`` that were not tracked hold no record (read from the
        broker: the hole is filled): continue at ``offset``."""
        if self._next.get(tp, offset) < offset:
            self._next[tp] = offset

    def committable(self) -> dict[Hashable, int]:
        """For each partition whose done prefix grew: the next offset to commit (Kafka's
        convention: the offset of the first record not yet done). The prefix is released."""
        out: dict[Hashable, int] = {}
        for tp, q in self._queues.items():
            last = None
            while q and q[0].done:
                last = q.popleft().offset
            if last is not None:
                out[tp] = last + 1
        return out

    def oldest_held(self) -> dict[Hashable, float]:
        """For each partition tracked: when its oldest record not yet done was delivered (the
        one holding its commit back), or None when every record tracked is done."""
        return {tp: q[0].arrived if q else None for tp, q in self._queues.items()}

    def forget(self, tps: set) -> None:
        """Drop what is tracked for these partitions (revoked): never committed by us."""
        for tp in tps:
            self._queues.pop(tp, None)
            self._next.pop(tp, None)
