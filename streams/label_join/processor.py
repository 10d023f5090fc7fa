"""`JoinProcessor`: what the label-join worker does with one batch of source records.

Per batch it validates each record (bad ones go to the dead-letter topic), feeds the
`LabelJoiner` of its partition (restored from the changelog, `streams.label_join.state`, off the event
loop, when the partition is first seen), and then:

- moves each partition's event-time watermark and applies what it passed;
- sends labels (key user_id, same partition number) and dropped events with their reason;
- writes the impression states that changed to the changelog, explicitly to the partition they
  belong to (one write per changed impression per batch, not per event);
- marks the records whose effects are complete, and commits source offsets itself (in the
  one commit order, `streams.kafka.checkpoint`), strictly in offset order per partition
  (`streams.label_join.ack_order`): a record still in the reorder buffer holds back the commit
  of every later record of its partition, so a crash redelivers it instead of losing it.

Records the consumer skipped are read back from the broker before the record that revealed
them (`streams.label_join.faust.hole_read`). On a rebalance the revoked partitions' in-memory joins and pending
commits are dropped (after the batch in flight has finished); the consumer rewinds to the
committed offsets, the joins are rebuilt from the changelog on the broker, and records fetched
before the rebalance are skipped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any

import orjson

from convcg.contract import Conversion, Topics, encode_label
from convcg.partitioning import PARTITIONER, PlacementCheck
from convcg.validation import InvalidEvent, Watermark, dead_letter, has_trusted_close_header, parse_event
from streams import metrics
from streams.kafka.checkpoint import Checkpoint, PendingCommits
from streams.kafka.output import OutputProducer
from streams.label_join.ack_order import GAP, REPEAT, InOrderAcks
from streams.label_join.consumer_port import ConsumerPort
from streams.label_join.joiner import LabelJoiner
from streams.label_join.state import JoinStateChangelog
from streams.label_join.watermark import PartitionWatermark
from streams.settings import StreamSettings

DEAD_LETTER_COMPONENT = "streams-worker"

log = logging.getLogger(__name__)


class JoinProcessor:
    """Everything the agent does with one batch, kept apart from Faust's wiring."""

    def __init__(self, settings: StreamSettings, consumer: ConsumerPort, changelog: JoinStateChangelog,
                 output: OutputProducer) -> None:
        self.settings = settings
        self.consumer = consumer
        self.output = output
        self.changelog = changelog
        t = Topics(settings.kafka.topic_prefix)
        self.topics = t
        self.source_topics = t.events
        self.type_of_topic = {t.impressions: "impression", t.engagements: "engagement", t.conversions: "conversion"}
        self.joiners: dict[int, LabelJoiner] = {}
        self.watermarks: dict[int, PartitionWatermark] = {}
        self._unsaved: list[tuple[int, list]] = []
        self.acks = InOrderAcks()
        self.commits = PendingCommits(settings.commit_interval_s)
        self.checkpoint = Checkpoint(output)
        self.placement = PlacementCheck()
        self._lock = asyncio.Lock()
        self.batches = 0

    # --- state ---------------------------------------------------------------------------

    async def _restore(self, partitions: set[int]) -> None:
        """Build the joins of partitions seen for the first time from their changelog. The
        read (from the broker, to the partition's end) runs in threads, off the event loop."""
        new = sorted(p for p in partitions if p not in self.joiners)
        if not new:
            return
        restored = await asyncio.gather(*(asyncio.to_thread(self.changelog.restore, p) for p in new))
        for partition, (states, wm) in zip(new, restored):
            joiner = self.joiners[partition] = LabelJoiner(self.settings.rules)
            joiner.restore(states, wm)
            self.watermarks[partition] = PartitionWatermark(self.settings.rules.allowed_lateness_s,
                                                            self.settings.idle_source_after_s, time.monotonic(),
                                                            max_skew_s=self.settings.max_future_s)
            self.watermarks[partition].value = wm
            log.info("partition %d: restored %d pending impressions, watermark %s", partition, len(states), wm)

    async def _start_offsets(self, tps: set) -> dict[Any, int]:
        """Where tracking starts for partitions not tracked yet: the committed offset, asked of
        the broker when the consumer does not know it yet; 0 when the group has none (it
        starts at the log start, and a first record after it reveals records skipped at
        start-up: a hole from 0 is read from the log start)."""
        starts = {tp: self.consumer.committed(tp) for tp in tps}
        unknown = [tp for tp, offset in starts.items() if offset is None]
        if unknown:
            starts.update(await self.consumer.committed_on_broker(unknown))
        return {tp: 0 if offset is None else offset for tp, offset in starts.items()}

    async def on_revoked(self, revoked: set) -> None:
        """Rebalance: after the batch in flight, forget the revoked partitions' joins (their
        state stays in the changelog) and never commit what was tracked for them."""
        async with self._lock:
            self.acks.forget(revoked)
            self.commits.forget(revoked)
            metrics.forget_partitions(metrics.OLDEST_UNCOMMITTED, revoked)
            for p in {tp.partition for tp in revoked if tp.topic in self.source_topics}:
                if self.joiners.pop(p, None) is not None:
                    del self.watermarks[p]
                    log.info("partition %d revoked: in-memory join dropped, restored from the changelog "
                             "when it is assigned again", p)

    # --- one batch -----------------------------------------------------------------------

    async def process(self, events: list[Any]) -> None:
        async with self._lock:
            await self._process(events)

    async def tick(self) -> None:
        """Re-evaluate every partition's watermark when no batch comes (sources going idle)."""
        async with self._lock:
            await self._process([])

    async def _process(self, events: list[Any]) -> None:
        now = time.time()
        touched: set[int] = set()
        events_in: Counter[str] = Counter()
        generation = self.consumer.generation_id
        acks = self.acks
        track = acks.track
        # fetched before a rebalance: skipped, redelivered from the committed offset
        current = [ev.message for ev in events if ev.message.generation_id == generation]
        arrived = time.monotonic()
        starts = await self._start_offsets({m.tp for m in current if acks.expected(m.tp) is None})
        await self._restore({m.partition for m in current})
        for msg in current:
            entry = track(msg.tp, msg.offset, starts.get(msg.tp), arrived)
            if entry is REPEAT:
                metrics.REDELIVERED.labels(msg.topic).inc()
                continue
            if entry is GAP:  # records before this one were skipped by the consumer: read them
                for hole_msg in await self._read_hole(msg.tp, acks.expected(msg.tp), msg.offset):
                    if hole_msg.offset is None:
                        continue
                    acks.skip_to(msg.tp, hole_msg.offset)  # offsets before it hold no record
                    hole_entry = track(msg.tp, hole_msg.offset, None, arrived)
                    if hole_entry is not REPEAT:
                        self._take(hole_msg, hole_entry, now, touched, events_in)
                acks.skip_to(msg.tp, msg.offset)  # offsets left in the hole hold no record
                entry = track(msg.tp, msg.offset, None, arrived)
            self._take(msg, entry, now, touched, events_in)
        released = []
        if not events:
            touched = set(self.joiners)
        for partition in touched:
            released.extend(self._advance(partition))
        for etype, n in events_in.items():
            metrics.EVENTS_IN.labels(etype).inc(n)
        # the labels this batch decided, then the state saying they were decided, then the
        # offsets their records make safe: the one commit order (streams.kafka.checkpoint)
        def safe_offsets() -> dict:
            for entry in released:
                entry.done = True
            self.commits.add(self.acks.committable())
            return self.commits.take_due()

        await self.checkpoint.commit(self._write_state, safe_offsets, self.consumer.commit)
        self.batches += 1
        metrics.export_oldest_uncommitted(metrics.OLDEST_UNCOMMITTED, self.acks.oldest_held(), time.monotonic())

    def _write_state(self) -> None:
        """Queue the changed impression states and watermarks of the batch on the changelog."""
        for partition, states in self._unsaved:
            for key, value in states:
                self.changelog.write(partition, key, value)
        self._unsaved.clear()

    def _take(self, msg: Any, entry: Any, now: float, touched: set[int], events_in: Counter) -> None:
        """Validate one record and hand it to its partition's join."""
        partition = msg.partition
        etype = self.type_of_topic.get(msg.topic)
        try:
            if etype is None:
                raise InvalidEvent("unknown_event_type", f"topic {msg.topic}")
            trusted = self.settings.trusted_close and has_trusted_close_header(getattr(msg, "headers", None))
            parsed = parse_event(etype, msg.value, now, self.settings.max_future_s, trusted)
            if not isinstance(parsed, Watermark):
                self._check_placement(parsed.user_id, msg.topic, partition)
            elif trusted:
                metrics.TRUSTED_CLOSES.inc()
        except InvalidEvent as exc:
            metrics.DEAD_LETTERS.labels(exc.reason).inc()
            self.output.send(self.topics.dead_letters, dead_letter(DEAD_LETTER_COMPONENT, msg.topic, partition,
                                                                   msg.offset, msg.value, exc.reason, exc.detail, now),
                             msg.key, partition)
            entry.done = True
            return
        joiner = self.joiners[partition]
        touched.add(partition)
        self.watermarks[partition].observe(msg.topic, parsed.ts, msg.offset, time.monotonic(), now,
                                           trusted and isinstance(parsed, Watermark))
        if isinstance(parsed, Watermark):
            entry.done = True
            return
        events_in[etype] += 1
        joiner.add(parsed, entry)

    def _check_placement(self, user_id: str, topic: str, partition: int) -> None:
        """The join is co-partitioned by the contract's partitioner: an event on another partition
        than its user's would never meet that user's other events, so it is rejected."""
        n = self.consumer.partitions(topic)
        if n and not self.placement.is_placed(user_id, partition, n):
            raise InvalidEvent("wrong_partition", f"user {user_id!r} belongs on partition "
                               f"{self.placement.expected(user_id, n)} of {n} ({PARTITIONER} of user_id, "
                               f"the contract's partitioner), not {partition}")

    async def _read_hole(self, tp: Any, start: int, end: int) -> list:
        metrics.HOLES_READ.labels(tp.topic).inc(end - start)
        log.warning("%s: offsets %d..%d were skipped by the consumer; reading them from the broker",
                    tp, start, end - 1)
        return await self.consumer.read_range(tp, start, end)

    def _advance(self, partition: int) -> list:
        joiner = self.joiners[partition]
        wm = self.watermarks[partition]
        highwaters = {t: self._highwater(t, partition) for t in self.source_topics}
        joiner.advance(wm.compute(highwaters, self.source_topics, self._committed(partition), time.monotonic()))
        out = joiner.drain()
        send, topics = self.output.send, self.topics
        kinds: Counter[str] = Counter()
        for label in out.labels:
            kinds[label.kind] += 1
            send(topics.labels, encode_label(label), label.user_id.encode(), partition)
        for kind, n in kinds.items():
            metrics.LABELS_OUT.labels(kind).inc(n)
        dropped: Counter[str] = Counter()
        for event, reason in out.dropped:
            dropped[reason] += 1
            if isinstance(event, Conversion):
                send(topics.unattributed, orjson.dumps({"reason": reason, "event": _event_dict(event)}),
                     event.user_id.encode(), partition)
            else:
                send(topics.dead_letters, dead_letter(DEAD_LETTER_COMPONENT, topics.of_event(event), partition, None,
                                                      orjson.dumps(_event_dict(event)), reason,
                                                      "dropped by the label join", time.time()),
                     event.user_id.encode(), partition)
        for reason, n in dropped.items():  # one metrics call per reason and batch, not per event
            metrics.DROPPED.labels(reason).inc(n)
        self._unsaved.append((partition, self.changelog.entries(partition, out.changed, joiner.watermark)))
        metrics.export_join_partition(partition, joiner.watermark, wm.newest, joiner.buffered, len(joiner.impressions))
        return out.released

    def _committed(self, partition: int) -> dict[str, int | None]:
        """Committed offsets of this partition's sources, as far as the consumer knows them."""
        return {t: self.consumer.committed(self.consumer.tp(t, partition)) for t in self.source_topics}

    def _highwater(self, topic: str, partition: int) -> int | None:
        hw = self.consumer.highwater(self.consumer.tp(topic, partition))
        if hw is not None:
            src = self.watermarks[partition].sources.get(topic)
            metrics.CONSUMER_LAG.labels(topic, str(partition)).set(max(0, hw - (src.next_offset if src else 0)))
        return hw


def _event_dict(event: Any) -> dict:
    from convcg.contract import event_to_dict

    return event_to_dict(event)
