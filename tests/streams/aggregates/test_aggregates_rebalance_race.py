"""Records polled around a rebalance are never skipped (the soak's lost events).

aiokafka sets a new assignment, and its fetcher may hand out the assignment's records,
before the ``on_partitions_assigned`` callback (where a stage partition is restored) has run;
and a revocation's flush can run while the loop holds polled records it has not counted. Both
used to advance the consumer's position past records no stage counted, and the next commit
made the loss permanent. Real broker, real aiokafka consumer; the worker's own methods."""

from __future__ import annotations

import asyncio
import time

import pytest

from convcg.kafka.settings import KafkaSettings
from streams.aggregates.stage import USER, StageAggregator
from streams.aggregates.worker import AggregatesWorker
from streams.settings import StreamSettings
from tests.streams.aggregates.test_aggregates_worker import ListOutput, _log
from tests.support.streams_harness import produce_events


def _worker(broker, topics) -> AggregatesWorker:
    worker = AggregatesWorker(StreamSettings(kafka=KafkaSettings(bootstrap=broker.bootstrap,
                                                                 topic_prefix=topics.prefix)), output=ListOutput())
    worker.managed = True
    return worker


async def _consumer(broker, topics, group: str):
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=group, enable_auto_commit=False,
                                auto_offset_reset="earliest", fetch_max_wait_ms=100)
    await consumer.start()
    tp = TopicPartition(topics.impressions, 0)
    consumer.assign([TopicPartition(t, 0) for t in topics.events])  # the user stage's sources
    return consumer, tp


async def _poll(consumer, tp, want: int = 1, tries: int = 50) -> list:
    for _ in range(tries):
        polled = await consumer.getmany(tp, timeout_ms=200, max_records=50)
        if len(polled.get(tp, [])) >= want:
            return polled[tp]
    raise AssertionError("no records polled")


@pytest.mark.broker
def test_records_read_before_their_stage_is_restored_are_read_again(broker, topics):
    produce_events(broker.bootstrap, topics, _log(seed=5)[:400], 3, close=False)

    async def scenario():
        worker = _worker(broker, topics)
        consumer, tp = await _consumer(broker, topics, f"{topics.prefix}race-a")
        try:
            first = await _poll(consumer, tp)
            # the assignment's callback has not restored (USER, 0) yet
            worker._count_polled(consumer, {tp: first}, worker.generation, time.time())
            assert worker.stages == {}
            assert await consumer.position(tp) == first[0].offset  # not past what nobody counted
            worker.stages[(USER, 0)] = StageAggregator(USER)  # restored now
            again = await _poll(consumer, tp)
            assert again[0].offset == first[0].offset
            worker._count_polled(consumer, {tp: again}, worker.generation, time.time())
            assert worker.stages[(USER, 0)].table  # counted this time
            assert await consumer.position(tp) == again[-1].offset + 1
        finally:
            await consumer.stop()

    asyncio.run(scenario())


@pytest.mark.broker
def test_records_polled_before_a_rebalance_are_not_counted_nor_committed_past(broker, topics):
    produce_events(broker.bootstrap, topics, _log(seed=6)[:400], 3, close=False)

    async def scenario():
        worker = _worker(broker, topics)
        worker.stages[(USER, 0)] = StageAggregator(USER)
        consumer, tp = await _consumer(broker, topics, f"{topics.prefix}race-b")
        try:
            polled = await _poll(consumer, tp)
            generation = worker.generation
            worker.pending_from = {(tp.topic, tp.partition): polled[0].offset}  # as the loop sets it
            # a revocation's flush runs now, while the loop still holds the polled records
            worker.generation += 1
            await worker._flush_state(consumer, [(USER, 0)])
            committed = await consumer.committed(tp)
            assert committed == polled[0].offset  # not the consumer's position past them
            # the loop gets the lock afterwards: the records are not counted, and read again
            worker._count_polled(consumer, {tp: polled}, generation, time.time())
            assert not worker.stages[(USER, 0)].table
            worker._count_polled(consumer, {tp: polled}, worker.generation, time.time())
            assert worker.stages[(USER, 0)].table  # the same records do count in this generation
            worker.stages[(USER, 0)] = StageAggregator(USER)
            consumer.seek(tp, polled[0].offset)
            again = await _poll(consumer, tp)
            assert again[0].offset == polled[0].offset
        finally:
            await consumer.stop()

    asyncio.run(scenario())
