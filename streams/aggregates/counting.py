"""`AggregatesCounter`: the broker-free core of `convcg aggregates`: which topic feeds which
stage, counting one poll's records into their stage partitions (`streams.aggregates.stage`),
forwarding what they accepted to the next stage, and sending the live stage partitions'
feature updates. `streams.aggregates.worker.AggregatesWorker` adds the consumer group, the
restores and the checkpoints.

Topology:

    impressions / engagements / conversions (keyed by user)
        -> user stage       -> aggregates-by-item (keyed by item)
        -> item stage       -> aggregates-by-advertiser (keyed by advertiser)
        -> advertiser stage
    every stage -> feature-updates (keyed by entity id); its state -> aggregates-<stage>-changelog

Invalid events are counted by reason and skipped: the label join worker owns the dead-letter
topic for raw events (one dead letter per bad record, not one per reader).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson

from convcg.contract import Engagement, Impression, Topics
from convcg.validation import InvalidEvent, Watermark, has_trusted_close_header, parse_event
from streams import metrics
from streams.aggregates.settings import AggregateSettings
from streams.aggregates.stage import ADVERTISER, ITEM, STAGES, USER, StageAggregator
from streams.kafka.output import OutputProducer
from streams.settings import StreamSettings

_KIND = {Impression: 0, Engagement: 1}  # else a conversion (2)


class AggregatesCounter:
    """Counts records into stage partitions (`count`) and sends their updates (`send_updates`)."""

    def __init__(self, settings: StreamSettings, output: Any | None = None,
                 aggregate_settings: AggregateSettings | None = None) -> None:
        self.settings = settings
        t = self.topics = Topics(settings.kafka.topic_prefix)
        self.type_of_topic = {t.impressions: "impression", t.engagements: "engagement", t.conversions: "conversion"}
        self.sources = {USER: t.events, ITEM: (t.aggregates_by_item,), ADVERTISER: (t.aggregates_by_advertiser,)}
        #: input topic -> (its stage, its source index in that stage)
        self.stage_of = {topic: (stage, i) for stage, topics in self.sources.items() for i, topic in enumerate(topics)}
        self.forward_topic = {USER: t.aggregates_by_item, ITEM: t.aggregates_by_advertiser}
        self.aggregate_settings = aggregate_settings or AggregateSettings()
        self.output = output if output is not None else OutputProducer(settings.kafka.bootstrap,
                                                                           linger_ms=settings.output_linger_ms)
        self.stages: dict[tuple[str, int], StageAggregator] = {}  # (stage, partition) -> its state
        self.live_stages: set[tuple[str, int]] = set()  # caught up since assigned: updates are sent
        self.managed = False  # the worker owns the assignment: stages come from restores, not first records
        #: (topic, partition) -> first offset of records read while their stage partition was
        #: not restored yet (an assignment's records can arrive before its callback has run)
        self.unowned: dict[tuple[str, int], int] = {}
        self._delay = {e: metrics.AGG_UPDATE_DELAY.labels(e) for e in STAGES}

    @property
    def live(self) -> bool:
        """Every assigned stage partition has caught up with its log as it was when assigned."""
        return bool(self.stages) and self.live_stages >= set(self.stages)

    def _stage(self, stage: str, partition: int) -> StageAggregator | None:
        st = self.stages.get((stage, partition))
        if st is None and not self.managed:  # broker-free: a partition is live from its first record
            st = self.stages[(stage, partition)] = StageAggregator(stage, self.aggregate_settings)
            self.live_stages.add((stage, partition))
        return st

    def count(self, topic: str, records: list, now: float) -> Counter:
        """Count the records of one topic into their stage partitions and queue what they
        forward to the next stage; returns counts by event type / stage and by skip reason."""
        counts: Counter[str] = Counter()
        stage_name, source = self.stage_of[topic]
        stage, partition = None, None
        if stage_name == USER:
            etype, max_future = self.type_of_topic[topic], self.settings.max_future_s
            for rec in records:
                if rec.partition != partition:
                    partition, stage = rec.partition, self._stage(USER, rec.partition)
                if stage is None:
                    self.unowned.setdefault((topic, rec.partition), rec.offset)
                    continue
                try:
                    event = parse_event(etype, rec.value, now, max_future)
                except InvalidEvent as exc:
                    if exc.reason == "watermark_in_future" and self.settings.trusted_close \
                            and has_trusted_close_header(getattr(rec, "headers", None)):
                        continue  # a trusted close (`convcg replay --close`): no count to keep
                    counts[f"skipped:{exc.reason}"] += 1
                    continue
                if isinstance(event, Watermark):
                    continue
                kind = _KIND.get(type(event), 2)
                if kind == 1:
                    stage.apply(event.event_id, kind, event.ts, event.user_id, event.item_id, "",
                                rec.timestamp or 0, source, rec.offset, event.impression_id, event.dwell_ms)
                else:
                    stage.apply(event.event_id, kind, event.ts, event.user_id, event.item_id,
                                event.advertiser_id, rec.timestamp or 0, source, rec.offset)
                counts[etype] += 1
        else:
            loads = orjson.loads
            for rec in records:
                if rec.partition != partition:
                    partition, stage = rec.partition, self._stage(stage_name, rec.partition)
                if stage is None:
                    self.unowned.setdefault((topic, rec.partition), rec.offset)
                    continue
                try:
                    event_id, kind, ts, item_id, advertiser_id, ingest_ms = loads(rec.value)
                except (orjson.JSONDecodeError, TypeError, ValueError):
                    counts["skipped:bad_repartition_record"] += 1
                    continue
                stage.apply(event_id, kind, ts, "", item_id, advertiser_id, ingest_ms, source, rec.offset)
                counts[f"stage:{stage_name}"] += 1
        self._forward(stage_name)
        return counts

    def _forward(self, stage_name: str) -> None:
        topic = self.forward_topic.get(stage_name)
        if topic is None:
            return
        send, dumps = self.output.send, orjson.dumps
        for (name, _), stage in self.stages.items():
            if name == stage_name and stage.out:
                for key, record in stage.out:
                    send(topic, dumps(record), key.encode())
                stage.out.clear()

    def send_updates(self, now: float, keys: Any = None) -> int:
        """One update per entity touched since the last call in the live stage partitions
        (``keys``: only these), to the feature-updates topic."""
        sent: Counter[str] = Counter()
        send, topic, delay = self.output.send, self.topics.feature_updates, self._delay
        for key in (self.live_stages if keys is None else keys & self.live_stages):
            for update in self.stages[key].drain():
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

    def _source_tps(self, key: tuple[str, int]) -> list[tuple[str, int]]:
        return [(topic, key[1]) for topic in self.sources[key[0]]]
