"""`convcg aggregates`: the streaming feature aggregates, as their own process.

Reads the three event topics, **every partition** (item and advertiser counts need the events
of every user, and events are keyed by user), counts each valid event into a
`StreamingAggregator` as it arrives, and every ``feature_flush_interval_s`` sends one coalesced
`FeatureUpdate` per entity touched to the feature-updates topic, keyed by entity id; the
features sink writes them to Feast's online and offline stores.

Why apart from the label join worker: features must be fresh within a second, while the join
deliberately holds events for its event-time watermark and its Faust loop is the busiest
thread of the pipeline. With the aggregates in that loop, feature freshness would queue behind
the join and its two flushes per batch (`bench/pipeline_freshness.py` measures the
freshness; the README's table has the figures). It also makes item and advertiser aggregates
exact however many label-join workers share the partitions.

Why not a Faust agent: it owns every partition (no group, no rebalance) and keeps no table,
and Faust's per-record path would cost several times the counting itself.

Restart = rebuild. Nothing is checkpointed: on start the worker reads every partition from
the log start (the log is the source of truth), counting without sending; once its consumer's
positions have reached the end offsets seen at start it sends one update per entity it knows (the current values)
and goes live. A crash or restart therefore loses no event's count and double-counts none
(the aggregator dedupes event ids); the cost is the rebuild time and a retention of at least
the longest window (7 days) plus the dedupe horizon.

Invalid events are counted by reason and skipped: the label join worker owns the dead-letter
topic for raw events (one dead letter per bad record, not one per reader).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any

import orjson

from convcg.contract import Topics
from convcg.validation import InvalidEvent, Watermark, parse_event
from streams import metrics
from streams.aggregates import StreamingAggregator
from streams.output import OutputProducer
from streams.settings import StreamSettings

log = logging.getLogger("convcg.streams.aggregates")


class AggregatesWorker:
    """The loop of `convcg aggregates`; `count` / `send_updates` are its broker-free core."""

    def __init__(self, settings: StreamSettings, output: Any | None = None) -> None:
        self.settings = settings
        self.topics = Topics(settings.kafka.topic_prefix)
        self.type_of_topic = {self.topics.impressions: "impression", self.topics.engagements: "engagement",
                              self.topics.conversions: "conversion"}
        self.aggregator = StreamingAggregator()
        self.output = output if output is not None else OutputProducer(settings.kafka.bootstrap)
        self.live = False  # caught up with the log as it was at start: updates are sent
        self.positions: dict[Any, int] = {}  # (topic, partition) -> the consumer's next offset
        self.stop_requested = asyncio.Event()
        self._delay = {e: metrics.AGG_UPDATE_DELAY.labels(e) for e in ("user", "item", "advertiser")}

    # --- broker-free core ------------------------------------------------------------------

    def count(self, topic: str, records: list, now: float) -> Counter:
        """Validate each record of one topic-partition and count it in; returns counts by
        event type and by skip reason."""
        counts: Counter[str] = Counter()
        etype = self.type_of_topic[topic]
        apply, max_future = self.aggregator.apply, self.settings.max_future_s
        for rec in records:
            try:
                event = parse_event(etype, rec.value, now, max_future)
            except InvalidEvent as exc:
                counts[f"skipped:{exc.reason}"] += 1
                continue
            if isinstance(event, Watermark):
                continue
            apply(event, rec.timestamp or 0)
            counts[etype] += 1
        return counts

    def send_updates(self, now: float) -> int:
        """One update per entity touched since the last call, to the feature-updates topic."""
        sent: Counter[str] = Counter()
        send, topic, delay = self.output.send, self.topics.feature_updates, self._delay
        for update in self.aggregator.drain():
            send(topic, orjson.dumps(update), update.entity_id.encode())
            sent[update.entity] += 1
            if update.ingest_ms > 0:
                delay[update.entity].observe(max(0.0, now - update.ingest_ms / 1000.0))
        for entity, n in sent.items():
            metrics.FEATURE_UPDATES.labels(entity).inc(n)
        return sum(sent.values())

    @staticmethod
    def caught_up(positions: dict[Any, int], targets: dict[Any, int]) -> bool:
        """Every partition's position has reached its target. Positions, not the offsets of
        the records read: offsets that hold no record (transaction markers, records removed by
        retention or compaction) come before the end offset and are never read as records."""
        return all(positions.get(tp, 0) >= end for tp, end in targets.items())

    async def _read_positions(self, consumer) -> None:
        for tp in consumer.assignment():
            self.positions[(tp.topic, tp.partition)] = await consumer.position(tp)

    # --- the loop --------------------------------------------------------------------------

    async def run(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        s = self.settings
        consumer = AIOKafkaConsumer(
            bootstrap_servers=s.kafka.bootstrap, group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest", fetch_max_wait_ms=s.aggregates_fetch_max_wait_ms,
            fetch_min_bytes=s.aggregates_fetch_min_bytes)
        await consumer.start()
        try:
            await consumer.topics()  # loads the cluster metadata (no subscription to trigger it)
            partitions = [TopicPartition(topic, p) for topic in self.topics.events
                          for p in sorted(consumer.partitions_for_topic(topic) or ())]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            ends = await consumer.end_offsets(partitions)
            targets = {(tp.topic, tp.partition): end for tp, end in ends.items()}
            total = sum(targets.values())
            log.info("aggregates: rebuilding from the log start of %d partitions (%d records), "
                        "then live", len(partitions), total)
            await self._loop(consumer, targets, total)
        finally:
            await consumer.stop()
            await self.output.flush()

    async def _loop(self, consumer, targets: dict[Any, int], total: int) -> None:
        s = self.settings
        t_start = last_flush = last_report = last_evict = time.monotonic()
        while not self.stop_requested.is_set():
            polled = await consumer.getmany(timeout_ms=s.aggregates_poll_timeout_ms,
                                            max_records=s.aggregates_poll_max_records)
            now = time.time()
            counts: Counter[str] = Counter()
            for tp, records in polled.items():
                counts.update(self.count(tp.topic, records, now))
            for key, n in counts.items():
                if key.startswith("skipped:"):
                    metrics.AGG_SKIPPED.labels(key.split(":", 1)[1]).inc(n)
                else:
                    metrics.AGG_EVENTS_IN.labels(key).inc(n)
            mono = time.monotonic()
            if not self.live:
                await self._read_positions(consumer)
            if not self.live and self.caught_up(self.positions, targets):
                self.live = True
                metrics.AGG_REBUILD_SECONDS.set(mono - t_start)
                log.info("aggregates: rebuilt from %d records in %.1fs; live", total, mono - t_start)
            if self.live and mono - last_flush >= s.feature_flush_interval_s:
                last_flush = mono
                if self.send_updates(now):
                    await self.output.flush()  # a delivery error stops the worker (restart = rebuild)
            if mono - last_report >= s.aggregates_report_every_s:
                last_report = mono
                await self._export_lag(consumer)
                if not self.live:
                    done = sum(min(self.positions.get(tp, 0), end) for tp, end in targets.items())
                    log.info("aggregates: rebuilding, %d / %d records", done, total)
            if mono - last_evict >= s.aggregates_evict_every_s:
                last_evict = mono
                evicted = self.aggregator.evict_inactive()
                if evicted:
                    log.info("aggregates: evicted %d inactive entities", evicted)

    async def _export_lag(self, consumer) -> None:
        if self.live:
            await self._read_positions(consumer)
        for tp in consumer.assignment():
            hw = consumer.highwater(tp)
            if hw is not None:
                nxt = self.positions.get((tp.topic, tp.partition), 0)
                metrics.AGG_LAG.labels(tp.topic, str(tp.partition)).set(max(0, hw - nxt))


def run_aggregates(settings: StreamSettings) -> None:
    """Run `convcg aggregates` in the foreground until SIGINT/SIGTERM."""
    from convcg.broker import create_topics
    from convcg.runtime import run_until_signalled

    create_topics(settings.kafka.bootstrap, Topics(settings.kafka.topic_prefix).all(), settings.partitions)
    if settings.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port)
    worker = AggregatesWorker(settings)
    run_until_signalled(worker.stop_requested, worker.run)
